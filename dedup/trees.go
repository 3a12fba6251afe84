package dedup

import (
	"os"
	"path/filepath"

	"vzd/spec"
)

// Trees returns the scan trees of the given containers: ID → mounted image
// ($VE_PRIVATE/mnt) for each container whose image is mounted (its root/
// is there) and that has not opted out (NoDedup).
func Trees(cs map[string]*spec.Container) map[string]string {
	out := map[string]string{}
	for id, c := range cs {
		if c == nil || c.NoDedup || c.Private == "" {
			continue
		}
		fsDir := filepath.Join(c.Private, "mnt")
		if st, err := os.Stat(filepath.Join(fsDir, baseName)); err == nil && st.IsDir() {
			out[id] = fsDir
		}
	}
	return out
}
