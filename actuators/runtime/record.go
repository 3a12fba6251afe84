package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"vzd/internal/filecache"
	"vzd/internal/jsonfile"
	"vzd/internal/procfs"
	"vzd/spec"
)

// Names of the files in a container's private area. Changing them breaks
// adoption of containers started by an older vzd.
const (
	stateDir    = ".vzd"
	recordFile  = "runtime.json"
	exitFile    = "exit.json"
	consoleFile = "console.log"
)

// Id ranges of unprivileged containers: container ids 0..idRange-1 map
// onto host ids base..base+idRange-1, bases allocated from firstBase up.
const (
	idRange   = 65536
	firstBase = 100000
	maxBases  = 4096
)

// record is what the runtime keeps about a container in
// $VE_PRIVATE/.vzd/runtime.json: what the kernel cannot tell (which pid is
// its init, which id range it owns). It is written by the agent when ids
// are allocated and completed by the supervisor once init runs.
type record struct {
	UIDBase    uint32 `json:"uid_base,omitempty"`
	GIDBase    uint32 `json:"gid_base,omitempty"`
	Privileged bool   `json:"privileged"`
	// The spec's bases the range was allocated from (0 = default).
	SpecUIDBase uint32 `json:"spec_uid_base,omitempty"`
	SpecGIDBase uint32 `json:"spec_gid_base,omitempty"`

	Pid        int       `json:"pid,omitempty"`
	StartTime  uint64    `json:"start_time,omitempty"` // /proc/PID/stat field 22
	StartedAt  time.Time `json:"started_at,omitzero"`
	StopSignal int       `json:"stop_signal,omitempty"`

	SupervisorPid   int    `json:"supervisor_pid,omitempty"`
	SupervisorStart uint64 `json:"supervisor_start,omitempty"`
}

// exitRecord is written by the supervisor when init exits.
type exitRecord struct {
	ExitCode int       `json:"exit_code"`
	ExitedAt time.Time `json:"exited_at"`
}

func recordPath(private string) string { return filepath.Join(private, stateDir, recordFile) }
func exitPath(private string) string   { return filepath.Join(private, stateDir, exitFile) }

// ConsoleLogPath is the file holding the container's console output (the
// previous part, once rotated, is the same name with ".1").
func ConsoleLogPath(c *spec.Container) string {
	return filepath.Join(c.Private, stateDir, consoleFile)
}

// readRecord returns the record, or a zero record when there is none.
func readRecord(private string) (record, error) {
	r, _, err := records.Get(recordPath(private), decodeRecord)
	return r, err
}

// records remembers decoded records: every pass reads every container's.
var records filecache.Cache[record]

func decodeRecord(path string) (record, error) {
	var r record
	_, err := jsonfile.Read(path, &r)
	return r, err
}

func writeRecord(private string, r record) error {
	return jsonfile.Write(recordPath(private), r)
}

// writeRecordFast replaces the record atomically but without fsync: what
// the supervisor adds (pids, start times) is worthless after a host crash,
// which kills the container anyway, and the id range was made durable by
// writeRecord before start.
func writeRecordFast(private string, r record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(private, stateDir), "."+recordFile+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), recordPath(private))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", recordPath(private), err)
	}
	return nil
}

func readExit(private string) (exitRecord, bool) {
	var e exitRecord
	b, err := os.ReadFile(exitPath(private))
	if err != nil || json.Unmarshal(b, &e) != nil {
		return e, false
	}
	return e, true
}

// usedRanges lists the uid and gid bases recorded by every container
// under privateBase except the one in skip.
func usedRanges(privateBase, skip string) (uids, gids []uint32, err error) {
	ents, err := os.ReadDir(privateBase)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	for _, e := range ents {
		dir := filepath.Join(privateBase, e.Name())
		if !e.IsDir() || filepath.Clean(dir) == filepath.Clean(skip) {
			continue
		}
		r, err := readRecord(dir)
		if err != nil || r.UIDBase == 0 {
			continue
		}
		uids = append(uids, r.UIDBase)
		gids = append(gids, r.GIDBase)
	}
	return uids, gids, nil
}

// nextFree returns the first start+k·idRange whose range overlaps none of
// the ranges starting at used.
func nextFree(start uint32, used []uint32) (uint32, error) {
	for k := uint64(0); k < maxBases; k++ {
		b := uint64(start) + k*idRange
		if b+idRange > 1<<32-1 {
			break
		}
		free := true
		for _, u := range used {
			if b < uint64(u)+idRange && uint64(u) < b+idRange {
				free = false
				break
			}
		}
		if free {
			return uint32(b), nil
		}
	}
	return 0, fmt.Errorf("no free id range from %d", start)
}

// procStartTime reads the start time (clock ticks since boot) of pid, and
// whether it is a zombie.
func procStartTime(pid int) (uint64, bool, error) { return procfs.StartTime(pid) }

// alive reports whether pid is the process that started at start.
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, zombie, err := procStartTime(pid)
	return err == nil && st == start && !zombie
}
