package templates

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"
)

// Builders an OS template can name. Changing these strings changes every
// definition hash and so rebuilds every cache.
const (
	BuilderBusybox     = "busybox"
	BuilderDebootstrap = "debootstrap"
)

// builderVersion is part of every definition hash: bump it when a builder
// changes what it produces, so existing caches are rebuilt.
const builderVersion = "2"

// OS is the definition of an OS template.
type OS struct {
	Name         string   `json:"name"`              // e.g. "debian-12-x86_64" (Virtuozzo naming)
	Distribution string   `json:"distribution"`      // "debian", "busybox"
	Version      string   `json:"version"`           // "12"
	Arch         string   `json:"arch"`              // "x86_64"
	Init         string   `json:"init"`              // "systemd" or "busybox"
	InitPath     string   `json:"init_path"`         // argv[0] of the container's init
	Builder      string   `json:"builder"`           // BuilderBusybox or BuilderDebootstrap
	Suite        string   `json:"suite,omitempty"`   // debootstrap suite (codename)
	Variant      string   `json:"variant,omitempty"` // debootstrap --variant
	Packages     []string `json:"packages,omitempty"`
	// PostInstall are shell scripts run with /bin/sh inside the new tree
	// (chroot, private mount, pid and network namespaces), in order.
	PostInstall []string `json:"post_install,omitempty"`
	// Aliases are other names the template answers to (Virtuozzo spells
	// Debian versions "debian-12.0-x86_64").
	Aliases []string `json:"-"`
	// EstimatedSize is the expected peak size of the build tree in bytes
	// (downloads included); it only drives the progress bar of a first build.
	EstimatedSize int64 `json:"-"`
}

// App is the definition of an application template.
type App struct {
	Name     string   `json:"name"`
	Packages []string `json:"packages"`
	// PreInstall and PostInstall are shell scripts run with /bin/sh inside
	// the container before and after the packages are installed.
	PreInstall  []string `json:"pre_install,omitempty"`
	PostInstall []string `json:"post_install,omitempty"`
}

// DefHash returns the key of the definition: a short hex SHA-256 of
// everything that shapes the built tree.
func (o OS) DefHash() string {
	b, _ := json.Marshal(struct {
		V string `json:"v"`
		OS
	}{builderVersion, o})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// Normalize turns a template name as written in a ve.conf (".debian-12-x86_64")
// or an HCL file into the canonical one.
func Normalize(name string) string {
	return strings.TrimPrefix(strings.TrimSpace(name), ".")
}

// debianPostInstall prepares a debootstrapped tree to be a container.
var debianPostInstall = []string{
	// The first boot generates the machine id; an image must not carry one.
	`: > /etc/machine-id; rm -f /var/lib/dbus/machine-id`,
	// Units that need hardware or a host-wide role a container lacks.
	`for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-modules-load.service sys-kernel-config.mount systemd-timesyncd.service getty@tty1.service; do ln -sf /dev/null /etc/systemd/system/$u; done`,
	`echo localhost > /etc/hostname`,
	// Documentation, manual pages and translations are a third of a
	// minimal tree and every container copies the image: drop them, and
	// keep dpkg from installing them later (as Debian's slim images do).
	`printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' 'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' 'path-exclude /usr/share/lintian/*' > /etc/dpkg/dpkg.cfg.d/vzd-slim
	find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
	find /usr/share/doc -mindepth 1 -type d -empty -delete
	rm -rf /usr/share/man/* /usr/share/info/* /usr/share/lintian/*
	find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +`,
	`apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /var/log/apt/* /tmp/* /var/tmp/*`,
}

// Builtin returns the templates this node knows without configuration.
func Builtin() (osTemplates []OS, apps []App) {
	osTemplates = []OS{
		{
			Name: "busybox", Distribution: "busybox", Version: "1", Arch: "x86_64",
			Init: "busybox", InitPath: "/sbin/init", Builder: BuilderBusybox,
			EstimatedSize: 2 << 20,
		},
		{
			Name: "debian-12-x86_64", Distribution: "debian", Version: "12", Arch: "x86_64",
			Init: "systemd", InitPath: "/sbin/init", Builder: BuilderDebootstrap,
			Suite: "bookworm", Variant: "minbase", Aliases: []string{"debian-12.0-x86_64", "debian-12-amd64"},
			Packages: []string{"systemd", "systemd-sysv", "dbus", "iproute2", "iputils-ping",
				"procps", "less", "ca-certificates", "netbase", "ifupdown", "libpam-systemd"},
			PostInstall:   debianPostInstall,
			EstimatedSize: 270 << 20,
		},
	}
	apps = []App{
		{
			Name: "nginx", Packages: []string{"nginx-light"},
			// A page of our own, so a client can tell this nginx from any other.
			PostInstall: []string{`mkdir -p /var/www/html && printf 'vzd nginx template\n' > /var/www/html/index.html`},
		},
		{
			Name: "ssh", Packages: []string{"openssh-server"},
			PostInstall: []string{`mkdir -p /run/sshd`},
		},
	}
	return osTemplates, apps
}

func sortedNames[T any](m map[string]T) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
