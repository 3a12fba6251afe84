package reconciler

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"vzd/internal/filecache"
	"vzd/internal/jsonfile"
	"vzd/spec"
)

// recordSchema is the version of the record format; bump it when a change
// would make an older vzd misread a newer record.
const recordSchema = 1

// RecordDir and RecordFile name the record inside a container's private
// area. Changing them makes vzd forget every existing container.
const (
	RecordDir  = ".vzd"
	RecordFile = "state.json"
)

// Record is what the reconciler remembers about a container beyond what
// the kernel tells: the last good spec (so an invalid file leaves the
// container as it was, across agent restarts too), what was applied, and
// what the container was started with. It lives in the private area, so
// it goes wherever the container's data goes.
type Record struct {
	Schema      int             `json:"schema"`
	ID          string          `json:"id"`
	ConfigFile  string          `json:"config_file,omitempty"`
	LastGood    *spec.Container `json:"last_good,omitempty"`
	AppliedHash string          `json:"applied_hash,omitempty"`
	// Started is the spec the running container was started with; the
	// restart-only fields of a newer spec are compared against it.
	Started *spec.Container `json:"started,omitempty"`
	// BootID is the boot during which vzd last started the container:
	// after a reboot only onboot containers start by themselves.
	BootID         string   `json:"boot_id,omitempty"`
	StartRequested bool     `json:"start_requested,omitempty"`
	Pending        []string `json:"pending,omitempty"`
}

// RecordPath is where the record of a container with the given private
// area lives.
func RecordPath(private string) string {
	return filepath.Join(private, RecordDir, RecordFile)
}

// records remembers decoded records: every pass reads every one, and
// almost none has changed since the last.
var records filecache.Cache[Record]

func decodeRecord(path string) (Record, error) {
	var r Record
	_, err := jsonfile.Read(path, &r)
	return r, err
}

// ReadRecord reads a record; a missing record is (nil, nil). The
// containers it points to are shared: callers must not modify them.
func ReadRecord(private string) (*Record, error) {
	r, found, err := records.Get(RecordPath(private), decodeRecord)
	if err != nil || !found {
		return nil, err
	}
	if r.Schema > recordSchema {
		return nil, fmt.Errorf("record %s has schema %d, newer than this vzd (%d): upgrade vzd", RecordPath(private), r.Schema, recordSchema)
	}
	return &r, nil
}

// WriteRecord writes r atomically (renameio: temp file, fsync, rename).
func WriteRecord(private string, r *Record) error {
	r.Schema = recordSchema
	return jsonfile.Write(RecordPath(private), r)
}

// ListRecords finds the records under a private base: the containers vzd
// manages or managed on this node, declared or not.
func ListRecords(privateBase string) (map[string]*Record, error) {
	ents, err := os.ReadDir(privateBase)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]*Record{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]*Record{}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() && e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		r, err := ReadRecord(filepath.Join(privateBase, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r != nil && r.ID != "" {
			out[r.ID] = r
		}
	}
	return out, errors.Join(errs...)
}
