package image

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDirectSpans(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name  string
		spans []span
		size  int64
		want  []span
		ok    bool
	}{
		{"none", nil, 10 * mib, nil, true},
		{"aligned", []span{{0, 4096}, {mib, mib + 8192}}, 2 * mib,
			[]span{{0, 4096}, {mib, mib + 8192}}, true},
		// 1 KiB blocks: spans grow to whole pages, and two that then
		// share a page are not written twice.
		{"rounded", []span{{1024, 2048}, {3072, 5120}, {9216, 10240}}, mib,
			[]span{{0, 4096}, {4096, 8192}, {8192, 12288}}, true},
		{"cut", []span{{0, 20 * mib}}, 20 * mib,
			[]span{{0, 8 * mib}, {8 * mib, 16 * mib}, {16 * mib, 20 * mib}}, true},
		{"unaligned size", []span{{0, 4096}, {8192, 8292}}, 8292, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := directSpans(tc.spans, tc.size)
			if ok != tc.ok || !slices.Equal(got, tc.want) {
				t.Errorf("directSpans(%v, %d) = %v, %v; want %v, %v", tc.spans, tc.size, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// sparseFile writes a file of size bytes with data at the given offsets
// (each run of n random bytes) and holes elsewhere, and returns its bytes.
func sparseFile(t *testing.T, path string, size int64, runs [][2]int64) []byte {
	t.Helper()
	want := make([]byte, size)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, run := range runs {
		b := want[run[0] : run[0]+run[1]]
		for i := range b {
			b[i] = byte(r.Uint32()) | 1 // never zero: data, not a hole
		}
		if _, err := f.WriteAt(b, run[0]); err != nil {
			t.Fatal(err)
		}
	}
	return want
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestCopySparse copies files with holes by each method this file system
// allows and checks the bytes and that holes stay holes.
func TestCopySparse(t *testing.T) {
	const mib = 1 << 20
	runs := [][2]int64{{0, 4096}, {mib, 12 << 10}, {3*mib + 100, 5000}, {5 * mib, 9 * mib}, {20*mib - 4096, 4096}}
	for _, tc := range []struct {
		name string
		size int64
		runs [][2]int64
	}{
		{"sparse", 20 * mib, runs},
		{"unaligned size", 20*mib + 100, append(runs, [2]int64{20 * mib, 100})},
		{"all hole", 4 * mib, nil},
		{"empty", 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			want := sparseFile(t, src, tc.size, tc.runs)
			dst := filepath.Join(dir, "dst")
			how, err := CopySparse(dst, src)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("method %s", how)
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("copy differs from source (%d bytes, want %d)", len(got), len(want))
			}
			// Holes stay holes (give or take a rounded-out page per run).
			if a, b := allocated(t, dst), allocated(t, src); a > b+int64(len(tc.runs))*8192 {
				t.Errorf("copy allocates %d bytes, source %d", a, b)
			}
			if tc.name == "unaligned size" && how == "direct" {
				t.Error("a size O_DIRECT cannot end on was copied direct")
			}
			if _, err := CopySparse(dst, src); err == nil {
				t.Error("copy over an existing file succeeded")
			} else if b, _ := os.ReadFile(dst); !bytes.Equal(b, want) {
				t.Error("a refused copy changed the existing file")
			}

			// The buffered copy, which file systems without O_DIRECT get.
			buf := filepath.Join(dir, "buffered")
			in, err := os.Open(src)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			out, err := os.OpenFile(buf, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			spans, err := dataSpans(in, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := copyBuffered(out, in, spans); err != nil {
				t.Fatal(err)
			}
			if err := out.Truncate(tc.size); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(buf); !bytes.Equal(got, want) {
				t.Error("buffered copy differs from source")
			}
		})
	}
}
