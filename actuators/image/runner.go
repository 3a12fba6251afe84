package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// Runner runs an external program and returns its combined output. A
// non-zero exit is an error; when it has an ExitCode() int method the
// caller may read the code (e2fsck reports "errors corrected" as 1).
// A program that is not installed gives an error wrapping exec.ErrNotFound.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// ExecRunner runs programs with os/exec. It looks in /usr/sbin and /sbin
// too, since a service's PATH often lacks them, and runs them with the C
// locale because vzd reads their messages.
type ExecRunner struct{}

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if p, e := exec.LookPath(dir + "/" + name); e == nil {
				path, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// A tool must not outlive a killed agent and keep writing an image
	// the next pass is rebuilding.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.Bytes(), err
}

// runTool runs an e2fsprogs tool and wraps its failure with the command
// and its output. okCodes are exit codes that mean success.
func (a *Actuator) runTool(ctx context.Context, okCodes []int, name string, args ...string) ([]byte, error) {
	out, err := a.run.Run(ctx, name, args...)
	if err == nil {
		return out, nil
	}
	if errors.Is(err, exec.ErrNotFound) {
		return out, fmt.Errorf("%s: %w (%w)", name, ErrToolMissing, err)
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		for _, c := range okCodes {
			if ec.ExitCode() == c {
				return out, nil
			}
		}
	}
	return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
}
