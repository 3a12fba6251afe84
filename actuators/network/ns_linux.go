package network

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// inNS runs fn on an OS thread that has joined the namespace at path (of
// kind nstype, a CLONE_NEW* flag) and returns it to its own namespace
// afterwards. Only what is per thread and has no file or netlink handle
// (sysctls under /proc/sys/net, sethostname) needs this. A thread that
// could not be restored is never unlocked, so the runtime ends it with its
// goroutine instead of handing it to other code in the wrong namespace.
func inNS(path string, nstype int, fn func() error) error {
	kind := map[int]string{unix.CLONE_NEWNET: "net", unix.CLONE_NEWUTS: "uts"}[nstype]
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/" + kind)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), nstype); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), nstype); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore %s namespace: %w", kind, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// sysctl is one /proc/sys/net value, key relative to /proc/sys/net.
type sysctl struct{ key, value string }

// setSysctls writes each value that differs, in the host namespace
// (entered when a.cfg.HostNS names one, since /proc/sys/net shows the
// namespace of the thread that opens it).
func (a *Actuator) setSysctls(want []sysctl) error {
	if len(want) == 0 {
		return nil
	}
	apply := func() error {
		var errs []error
		for _, s := range want {
			p := "/proc/sys/net/" + s.key
			old, err := os.ReadFile(p)
			if err == nil && strings.TrimSpace(string(old)) == s.value {
				continue
			}
			if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("sysctl %s=%s: %w", s.key, s.value, err))
				continue
			}
			a.log.Info("sysctl set", "key", s.key, "value", s.value)
		}
		return errors.Join(errs...)
	}
	if a.cfg.HostNS == "" {
		return apply()
	}
	return inNS(a.cfg.HostNS, unix.CLONE_NEWNET, apply)
}

// setHostname sets the hostname of the UTS namespace of pid, if it differs.
func setHostname(pid int, name string) (bool, error) {
	changed := false
	err := inNS(fmt.Sprintf("/proc/%d/ns/uts", pid), unix.CLONE_NEWUTS, func() error {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return err
		}
		if unix.ByteSliceToString(u.Nodename[:]) == name {
			return nil
		}
		changed = true
		return unix.Sethostname([]byte(name))
	})
	if err != nil {
		return false, fmt.Errorf("set hostname of pid %d: %w", pid, err)
	}
	return changed, nil
}
