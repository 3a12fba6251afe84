package templates

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/renameio/v2"
)

// listsMaxAge is how old the package lists of an OS may get before a fetch
// refreshes them.
const listsMaxAge = 24 * time.Hour

// Deb is one package file to install.
type Deb struct {
	Package string // package name
	Path    string // host path of the .deb
}

// IsLocalDeb reports whether a package entry of an App names a .deb file
// on the host rather than a package of the archive.
func IsLocalDeb(p string) bool { return filepath.IsAbs(p) && strings.HasSuffix(p, ".deb") }

// FetchApp returns the .deb files that installing app needs on a system
// of OS template osName whose dpkg status file holds status: the app's
// packages and the dependencies status lacks, resolved by apt on the host
// against the OS's release on the host's mirror. Files are downloaded once
// into <TemplateDir>/apps/<app>/<os>/ and reused. Packages given as
// absolute .deb paths are returned as they are.
func (c *Cache) FetchApp(ctx context.Context, app App, osName string, status []byte) ([]Deb, error) {
	var debs []Deb
	var names []string
	for _, p := range app.Packages {
		if IsLocalDeb(p) {
			name, err := debPackageName(ctx, p)
			if err != nil {
				return nil, err
			}
			debs = append(debs, Deb{Package: name, Path: p})
		} else {
			names = append(names, p)
		}
	}
	if len(names) == 0 {
		return debs, nil
	}
	o, ok := c.Lookup(osName)
	if !ok {
		return nil, c.UnknownOSError(osName)
	}
	if o.Distribution != "debian" || o.Suite == "" {
		return nil, fmt.Errorf("application template %s needs a Debian OS template, not %s", app.Name, o.Name)
	}
	apt, err := c.aptFor(ctx, o)
	if err != nil {
		return nil, err
	}
	defer apt.unlock()
	if err := renameio.WriteFile(apt.status, status, 0o644); err != nil {
		return nil, err
	}
	archives := filepath.Join(c.appsDir, app.Name, o.Name)
	if err := os.MkdirAll(filepath.Join(archives, "partial"), 0o755); err != nil {
		return nil, err
	}
	// What would be installed on that system, so the cached directory (which
	// may hold files fetched for other systems) is filtered to exactly that.
	out, err := apt.run(ctx, append([]string{"-s", "install"}, names...)...)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", strings.Join(names, " "), err)
	}
	insts := parseInst(out)
	if len(insts) == 0 {
		return debs, nil
	}
	missing := false
	for _, in := range insts {
		if _, err := os.Stat(filepath.Join(archives, in.file())); err != nil {
			missing = true
		}
	}
	if missing {
		c.log.Info("fetching packages", "app", app.Name, "os", o.Name, "packages", len(insts))
		if _, err := apt.run(ctx, append([]string{"-o", "Dir::Cache::archives=" + archives,
			"--download-only", "install"}, names...)...); err != nil {
			return nil, fmt.Errorf("download %s: %w", strings.Join(names, " "), err)
		}
	}
	for _, in := range insts {
		p := filepath.Join(archives, in.file())
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("package %s %s not downloaded: %w", in.name, in.version, err)
		}
		debs = append(debs, Deb{Package: in.name, Path: p})
	}
	return debs, nil
}

// inst is one "Inst" line of apt-get -s.
type inst struct{ name, version, arch string }

// file is the name apt gives the downloaded package (the epoch colon is
// escaped as %3a).
func (i inst) file() string {
	return i.name + "_" + strings.ReplaceAll(url.PathEscape(i.version), ":", "%3a") + "_" + i.arch + ".deb"
}

// parseInst reads lines such as
// "Inst nginx-light (1.22.1-9+deb12u1 Debian:12.10/stable [amd64])" and
// "Inst libfoo [1.0-1] (1.0-2 Debian:12/stable [all])".
func parseInst(out []byte) []inst {
	var res []inst
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "Inst ") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		in := inst{name: f[1]}
		rest := strings.Join(f[2:], " ")
		if open := strings.Index(rest, "("); open >= 0 {
			body := rest[open+1:]
			if end := strings.LastIndex(body, ")"); end >= 0 {
				body = body[:end]
			}
			bf := strings.Fields(body)
			if len(bf) > 0 {
				in.version = bf[0]
			}
			if l := strings.LastIndex(body, "["); l >= 0 {
				in.arch = strings.Trim(body[l:], "[] ")
			}
		}
		if in.version == "" || in.arch == "" {
			continue
		}
		res = append(res, in)
	}
	return res
}

func debPackageName(ctx context.Context, deb string) (string, error) {
	out, err := exec.CommandContext(ctx, "dpkg-deb", "-f", deb, "Package").Output()
	if err != nil {
		return "", fmt.Errorf("dpkg-deb -f %s: %w", deb, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// aptEnv is a throwaway apt configuration for one OS template, under
// <TemplateDir>/apps/.apt/<os>, held locked while in use.
type aptEnv struct {
	dir, status string
	opts        []string
	unlock      func()
}

func (c *Cache) aptFor(ctx context.Context, o OS) (*aptEnv, error) {
	m, err := HostMirror(c.EtcApt)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.appsDir, ".apt", o.Name)
	for _, d := range []string{"state/lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, ".lock"))
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	opt := ""
	if m.Keyring != "" {
		opt = "[signed-by=" + m.Keyring + "] "
	}
	src := fmt.Sprintf("deb %s%s %s main\ndeb %s%s %s-updates main\n", opt, m.URI, o.Suite, opt, m.URI, o.Suite)
	if m.Security != "" {
		src += fmt.Sprintf("deb %s%s %s-security main\n", opt, m.Security, o.Suite)
	}
	if err := renameio.WriteFile(filepath.Join(dir, "sources.list"), []byte(src), 0o644); err != nil {
		unlock()
		return nil, err
	}
	a := &aptEnv{dir: dir, status: filepath.Join(dir, "status"), unlock: unlock}
	a.opts = []string{
		"-o", "Dir::Etc::SourceList=" + filepath.Join(dir, "sources.list"),
		"-o", "Dir::Etc::SourceParts=" + filepath.Join(dir, "sources.list.d"),
		"-o", "Dir::Etc::PreferencesParts=" + filepath.Join(dir, "preferences.d"),
		"-o", "Dir::State=" + filepath.Join(dir, "state"),
		"-o", "Dir::State::status=" + a.status,
		"-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
		"-o", "Debug::NoLocking=1",
		"-o", "APT::Architecture=" + debArch(o.Arch),
		"-o", "APT::Install-Recommends=0",
		"-o", "APT::Get::Assume-Yes=1",
		"-o", "Acquire::Languages=none",
		"-q",
	}
	lists, _ := filepath.Glob(filepath.Join(dir, "state/lists/*Packages*"))
	fresh := len(lists) > 0
	for _, l := range lists {
		if st, err := os.Stat(l); err != nil || time.Since(st.ModTime()) > listsMaxAge {
			fresh = false
		}
	}
	if !fresh {
		c.log.Info("updating package lists", "os", o.Name, "mirror", m.URI)
		// An empty status is enough for apt-get update.
		if _, err := os.Stat(a.status); err != nil {
			os.WriteFile(a.status, nil, 0o644)
		}
		if _, err := a.run(ctx, "update"); err != nil {
			unlock()
			return nil, fmt.Errorf("apt-get update for %s: %w", o.Name, err)
		}
	}
	return a, nil
}

func (a *aptEnv) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "apt-get", append(append([]string(nil), a.opts...), args...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return out, fmt.Errorf("%w: %s", err, tail(append(out, stderr.Bytes()...)))
	}
	return out, nil
}

// InstalledPackages parses a dpkg status file and returns the packages in
// state "install ok installed", sorted; others (half-installed, unpacked…)
// are returned in broken with their status.
func InstalledPackages(status []byte) (installed []string, broken map[string]string) {
	broken = map[string]string{}
	for _, stanza := range strings.Split(string(status), "\n\n") {
		var pkg, st string
		for _, line := range strings.Split(stanza, "\n") {
			if v, ok := strings.CutPrefix(line, "Package: "); ok {
				pkg = strings.TrimSpace(v)
			} else if v, ok := strings.CutPrefix(line, "Status: "); ok {
				st = strings.TrimSpace(v)
			}
		}
		if pkg == "" {
			continue
		}
		switch {
		case strings.HasSuffix(st, " ok installed"):
			installed = append(installed, pkg)
		case strings.HasSuffix(st, " not-installed") || strings.HasSuffix(st, " config-files"):
		default:
			broken[pkg] = st
		}
	}
	sort.Strings(installed)
	return installed, broken
}
