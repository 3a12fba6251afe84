package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"vzd/reconciler"
)

// The control socket is a root-only unix socket under the run directory
// serving a small HTTP API: the CLI asks the running agent rather than
// acting behind its back.
const socketName = "vzd.sock"

func socketPath(g *globals) string { return filepath.Join(g.paths.RunDir(), socketName) }

// serveControl serves the API until ctx ends.
func serveControl(ctx context.Context, g *globals, r *reconciler.Reconciler) error {
	path := socketPath(g)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	_ = os.Remove(path) // a stale socket of a killed agent
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	// Root only: the API can destroy containers.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, r.Status())
	})
	mux.HandleFunc("POST /sync", func(w http.ResponseWriter, _ *http.Request) {
		r.Trigger()
		writeJSON(w, map[string]string{"result": "triggered"})
	})
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, req *http.Request) {
		if err := r.RequestStart(req.URL.Query().Get("id")); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		writeJSON(w, map[string]string{"result": "start requested"})
	})
	mux.HandleFunc("POST /destroy", func(w http.ResponseWriter, req *http.Request) {
		if err := r.Destroy(req.Context(), req.URL.Query().Get("id")); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		writeJSON(w, map[string]string{"result": "destroyed"})
	})
	// Go's profiler on the same root-only socket: a slow pass on a
	// production node can be profiled without restarting the agent
	// (curl --unix-socket /run/vzd/vzd.sock http://vzd/debug/pprof/profile).
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// errNoAgent says the agent is not there to ask.
var errNoAgent = errors.New("the vzd agent is not running (start it with `systemctl start vzd` or `vzd agent`)")

// callAgent does one request on the control socket and decodes the JSON
// answer into out (when not nil).
func callAgent(ctx context.Context, g *globals, method, path string, query url.Values, timeout time.Duration, out any) error {
	sock := socketPath(g)
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	u := "http://vzd" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %v", errNoAgent, err)
		}
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(strings.TrimSpace(string(body)))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}
