package templates

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// Mirror is where Debian packages come from: the mirror the host's apt
// already uses.
type Mirror struct {
	URI      string // e.g. http://deb.debian.org/debian
	Security string // e.g. http://deb.debian.org/debian-security; may be empty
	Keyring  string // signed-by keyring of the main mirror; may be empty
}

// aptSource is one "deb" entry of sources.list or a deb822 .sources stanza.
type aptSource struct {
	uris, suites []string
	signedBy     string
}

// HostMirror reads the host's apt sources (etcApt is normally /etc/apt:
// sources.list, sources.list.d/*.list and deb822 *.sources) and returns the
// Debian mirror they use.
func HostMirror(etcApt string) (Mirror, error) {
	var srcs []aptSource
	if b, err := os.ReadFile(filepath.Join(etcApt, "sources.list")); err == nil {
		srcs = append(srcs, parseOneLine(string(b))...)
	}
	ents, _ := os.ReadDir(filepath.Join(etcApt, "sources.list.d"))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(etcApt, "sources.list.d", e.Name()))
		if err != nil {
			continue
		}
		switch {
		case strings.HasSuffix(e.Name(), ".list"):
			srcs = append(srcs, parseOneLine(string(b))...)
		case strings.HasSuffix(e.Name(), ".sources"):
			srcs = append(srcs, parseDeb822(string(b))...)
		}
	}
	var m Mirror
	for _, s := range srcs {
		for _, suite := range s.suites {
			if len(s.uris) == 0 {
				continue
			}
			switch {
			case strings.HasSuffix(suite, "-security"):
				if m.Security == "" {
					m.Security = strings.TrimSuffix(s.uris[0], "/")
				}
			case !strings.Contains(suite, "-") && isDebianURI(s.uris[0]):
				if m.URI == "" {
					m.URI = strings.TrimSuffix(s.uris[0], "/")
					m.Keyring = s.signedBy
				}
			}
		}
	}
	if m.URI == "" {
		return m, errors.New("no Debian mirror in " + etcApt + " sources")
	}
	return m, nil
}

// isDebianURI tells a Debian archive from third-party repositories
// (vendor SDKs and the like) that a host may also list.
func isDebianURI(u string) bool {
	return strings.Contains(u, "debian") && !strings.Contains(u, "security")
}

func parseOneLine(text string) []aptSource {
	var out []aptSource
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		var s aptSource
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			// Options: "[arch=amd64 signed-by=/x]" possibly split over fields.
			for len(f) > 0 {
				opt := strings.Trim(f[0], "[]")
				if k, v, ok := strings.Cut(opt, "="); ok && k == "signed-by" {
					s.signedBy = v
				}
				end := strings.HasSuffix(f[0], "]")
				f = f[1:]
				if end {
					break
				}
			}
		}
		if len(f) < 2 {
			continue
		}
		s.uris, s.suites = []string{f[0]}, []string{f[1]}
		out = append(out, s)
	}
	return out
}

func parseDeb822(text string) []aptSource {
	var out []aptSource
	for _, stanza := range strings.Split(text, "\n\n") {
		fields := map[string]string{}
		key := ""
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
				continue
			}
			if line[0] == ' ' || line[0] == '\t' {
				if key != "" {
					fields[key] += "\n" + strings.TrimSpace(line)
				}
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			key = strings.ToLower(strings.TrimSpace(k))
			fields[key] = strings.TrimSpace(v)
		}
		if !strings.Contains(" "+fields["types"]+" ", " deb ") {
			continue
		}
		if strings.EqualFold(fields["enabled"], "no") {
			continue
		}
		s := aptSource{uris: strings.Fields(fields["uris"]), suites: strings.Fields(fields["suites"])}
		if sb := fields["signed-by"]; !strings.Contains(sb, "\n") {
			s.signedBy = sb
		}
		out = append(out, s)
	}
	return out
}
