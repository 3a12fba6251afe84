package cgroups

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the processes the tests put in cgroups:
// VZD_CGROUPS_HELPER selects one, and each waits for a line on stdin
// before it starts, so the test can move it into the cgroup first.
func TestMain(m *testing.M) {
	switch os.Getenv("VZD_CGROUPS_HELPER") {
	case "":
		os.Exit(m.Run())
	case "hog":
		helperHog()
	case "burn":
		helperBurn()
	case "open":
		helperOpen()
	case "hold":
		helperHold()
	}
	os.Exit(0)
}

func waitGo() { bufio.NewReader(os.Stdin).ReadString('\n') }

// helperHog allocates and touches 200 MiB, 1 MiB at a time, then says so.
func helperHog() {
	waitGo()
	var keep [][]byte
	for range 200 {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
	}
	fmt.Println("survived", len(keep))
}

// helperBurn spins on every CPU for 2.5 s.
func helperBurn() {
	waitGo()
	end := time.Now().Add(2500 * time.Millisecond)
	done := make(chan bool)
	n := runtime.NumCPU()
	for range n {
		go func() {
			x := 0
			for time.Now().Before(end) {
				for i := range 100000 {
					x += i
				}
			}
			done <- x > 0
		}()
	}
	for range n {
		<-done
	}
}

// helperHold allocates and touches 48 MiB, says "ready" and holds it
// until stdin closes.
func helperHold() {
	waitGo()
	b := make([]byte, 48<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(b)
}

// helperOpen opens, for each line on stdin, the path it names and prints
// "ok" or the error.
func helperOpen() {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f, err := os.OpenFile(sc.Text(), os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			fmt.Println(err)
			continue
		}
		f.Close()
		fmt.Println("ok")
	}
}

// helper is a running helper process.
type helper struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	done chan struct{}
	err  error // of Wait, valid after done
}

// startHelper starts the helper kind (or argv when kind is "" and argv is
// set); it is killed and reaped in Cleanup whatever happens.
func startHelper(t *testing.T, kind string, argv ...string) *helper {
	t.Helper()
	var cmd *exec.Cmd
	if kind != "" {
		cmd = exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "VZD_CGROUPS_HELPER="+kind)
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, in: in, out: bufio.NewReader(out), done: make(chan struct{})}
	go func() {
		h.err = cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-h.done
	})
	return h
}

func (h *helper) pid() int { return h.cmd.Process.Pid }

func (h *helper) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(h.in, line+"\n"); err != nil {
		t.Fatalf("write to helper: %v", err)
	}
}

// line reads one line of the helper's output, failing after 10 s.
func (h *helper) line(t *testing.T) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		s, _ := h.out.ReadString('\n')
		ch <- strings.TrimSpace(s)
	}()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("helper said nothing for 10s")
		return ""
	}
}

// wait waits for the helper to exit, failing after d.
func (h *helper) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-h.done:
		return h.err
	case <-time.After(d):
		t.Fatalf("helper still running after %v", d)
		return nil
	}
}

// testLogger routes the driver's logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// listDirs returns which of dirs exist.
func listDirs(dirs map[string]string) []string {
	var out []string
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			out = append(out, d)
		}
	}
	return out
}

func parentDirs(dirs map[string]string) []string {
	var out []string
	for _, d := range dirs {
		out = append(out, filepath.Dir(d))
	}
	return out
}
