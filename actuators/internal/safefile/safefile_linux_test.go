package safefile

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// tree makes a container root beside a host directory holding a file the
// container must never reach.
func tree(t *testing.T) (root, secret string) {
	t.Helper()
	top := t.TempDir()
	root = filepath.Join(top, "root")
	host := filepath.Join(top, "host")
	for _, d := range []string{root + "/etc", host} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret = filepath.Join(host, "shadow")
	if err := os.WriteFile(secret, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return root, secret
}

func assertUnchanged(t *testing.T, secret string) {
	t.Helper()
	b, err := os.ReadFile(secret)
	if err != nil || string(b) != "host secret\n" {
		t.Fatalf("host file changed: %q %v", b, err)
	}
}

func TestWriteReplacesPlantedLink(t *testing.T) {
	root, secret := tree(t)
	// Absolute and relative links that would leave the root if followed.
	links := map[string]string{
		"etc/resolv.conf": secret,
		"etc/hostname":    "../../host/shadow",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	for name := range links {
		if _, err := ReadFile(root, "/"+name); !errors.Is(err, ErrNotRegular) {
			t.Errorf("ReadFile(%s) = %v, want ErrNotRegular", name, err)
		}
		if err := WriteFile(root, "/"+name, []byte("ok\n"), 0o644); err != nil {
			t.Fatalf("WriteFile(%s): %v", name, err)
		}
		st, err := os.Lstat(filepath.Join(root, name))
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o644 {
			t.Fatalf("%s after write: %v %v", name, st, err)
		}
	}
	assertUnchanged(t, secret)
}

func TestDirectoryLinksStayInRoot(t *testing.T) {
	root, secret := tree(t)
	// A directory link pointing at the host's "/" and one climbing out with
	// "..": both must resolve inside root.
	if err := os.Symlink("/", filepath.Join(root, "abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../host", filepath.Join(root, "up")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(root, "/up/shadow", []byte("x"), 0o644); err == nil {
		// "up" resolves to root's "/host", which does not exist.
		t.Fatal("write through ../ link succeeded")
	}
	if err := WriteFile(root, "/abs/etc/hosts", []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/hosts")); err != nil || string(b) != "127.0.0.1 localhost\n" {
		t.Fatalf("write via /-link landed elsewhere: %q %v", b, err)
	}
	assertUnchanged(t, secret)
}

func TestReadFIFODoesNotBlock(t *testing.T) {
	root, _ := tree(t)
	if err := syscall.Mkfifo(filepath.Join(root, "etc/hosts"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(root, "/etc/hosts"); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("ReadFile(fifo) = %v, want ErrNotRegular", err)
	}
}

func TestUpdateFileOwnerAndIdempotence(t *testing.T) {
	root, _ := tree(t)
	if os.Geteuid() == 0 {
		// The new file takes its directory's owner (the container's root
		// in a user namespace).
		if err := os.Chown(filepath.Join(root, "etc"), 100000, 100000); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, want := range []bool{true, false} {
		wrote, err := r.UpdateFile("/etc/hostname", []byte("ct1\n"), 0o644)
		if err != nil || wrote != want {
			t.Fatalf("update %d: wrote=%v err=%v, want wrote=%v", i, wrote, err, want)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, "etc/hostname"), &st); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 && st.Uid != 100000 {
		t.Fatalf("owner %d, want 100000", st.Uid)
	}
	ents, _ := os.ReadDir(filepath.Join(root, "etc"))
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}
