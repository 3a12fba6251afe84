package image

import (
	"path/filepath"

	"vzd/internal/filecache"
	"vzd/internal/jsonfile"
	"vzd/spec"
)

// recordVersion is the format of image.json; changing the fields'
// meaning needs a new version.
const recordVersion = 1

// record is what the kernel cannot tell about an image: how it was made
// and a resize waiting for the next stop/start.
type record struct {
	Version       int    `json:"version"`
	CreatedSize   uint64 `json:"created_size"`
	CreatedInodes uint64 `json:"created_inodes"`
	Source        string `json:"source,omitempty"` // template image it was copied from
	PendingSize   uint64 `json:"pending_size,omitempty"`
}

func recordPath(c *spec.Container) string {
	return filepath.Join(c.Private, recordDir, recordName)
}

// readRecord returns the record, or a zero record when there is none.
func readRecord(c *spec.Container) (record, error) {
	r, _, err := records.Get(recordPath(c), decodeRecord)
	return r, err
}

// records remembers decoded records: every pass reads every image's.
var records filecache.Cache[record]

func decodeRecord(path string) (record, error) {
	var r record
	_, err := jsonfile.Read(path, &r)
	return r, err
}

func writeRecord(c *spec.Container, r record) error {
	r.Version = recordVersion
	return jsonfile.Write(recordPath(c), r)
}

// setPending records (size > 0) or clears (size == 0) a pending resize.
func setPending(c *spec.Container, size uint64) error {
	r, err := readRecord(c)
	if err != nil {
		return err
	}
	if r.PendingSize == size {
		return nil
	}
	r.PendingSize = size
	return writeRecord(c, r)
}
