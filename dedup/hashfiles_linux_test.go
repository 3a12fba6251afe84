package dedup

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// bothHashers runs f with the paired SHA-NI hashing (when this CPU has it)
// and with crypto/sha1 one file at a time.
func bothHashers(t *testing.T, f func(t *testing.T)) {
	t.Run("pairs", func(t *testing.T) {
		requireSHA1x2(t)
		f(t)
	})
	t.Run("each", func(t *testing.T) {
		saved := haveSHA1x2
		haveSHA1x2 = false
		defer func() { haveSHA1x2 = saved }()
		f(t)
	})
}

// writeFiles writes files (path below fsDir/root → content) and returns
// the hash jobs for them, in the order given, with the tree open.
func writeFiles(t *testing.T, id, fsDir string, names []string, files map[string][]byte) []*hashJob {
	t.Helper()
	base := filepath.Join(fsDir, baseName)
	for _, rel := range names {
		p := filepath.Join(base, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, files[rel], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := openTree(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.close)
	var jobs []*hashJob
	for _, rel := range names {
		jobs = append(jobs, &hashJob{id: id, fsDir: fsDir, rel: rel, tree: tr})
	}
	return jobs
}

// TestHashJobsSizes: digests of files of every size class (empty, within a
// block, block edges, buffer edges, several buffers), an odd number of them
// so that the last is hashed alone, are those of crypto/sha1, and are
// recorded; the second pass takes them from the xattrs.
func TestHashJobsSizes(t *testing.T) {
	bothHashers(t, func(t *testing.T) {
		n := newNode(t)
		c := n.cache(nil)
		c.cfg.MinSize = 0 // the configuration cannot say 0 (the default): hash tiny files too
		sizes := []int{0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 4095, hashBufSize - 1, hashBufSize, hashBufSize + 1, 3*hashBufSize + 77, 5 << 20}
		files := map[string][]byte{}
		var names []string
		for i, size := range sizes {
			rel := filepath.Join("usr/lib", itoa(int64(i))+".bin")
			files[rel] = randBytes(uint64(100+i), size)
			names = append(names, rel)
		}
		jobs := writeFiles(t, "a", n.fsDir("a"), names, files)
		var st ScanStats
		if err := c.hashJobs(context.Background(), jobs, &st); err != nil {
			t.Fatal(err)
		}
		var total uint64
		for i, j := range jobs {
			if !j.ok || j.digest != sha(files[j.rel]) {
				t.Errorf("size %d: ok %v digest %s, want %s", sizes[i], j.ok, j.digest, sha(files[j.rel]))
			}
			total += uint64(sizes[i])
		}
		if st.HashedFiles != len(sizes) || st.HashedBytes != total || st.ReusedDigests != 0 {
			t.Fatalf("stats %+v, want %d files, %d bytes hashed", st, len(sizes), total)
		}
		for _, j := range jobs {
			j.ok, j.digest = false, ""
		}
		st = ScanStats{}
		if err := c.hashJobs(context.Background(), jobs, &st); err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if !j.ok || j.digest != sha(files[j.rel]) {
				t.Errorf("%s from its xattr: ok %v digest %s", j.rel, j.ok, j.digest)
			}
		}
		if st.HashedFiles != 0 || st.ReusedDigests != len(sizes) {
			t.Fatalf("second pass %+v, want every digest from its xattr", st)
		}
	})
}

// TestHashJobsTee: a second container's copy of a shared file is stored
// as it is hashed (no second read); a file with the same path and size but
// other content is not, and leaves nothing behind.
func TestHashJobsTee(t *testing.T) {
	bothHashers(t, func(t *testing.T) {
		n := newNode(t)
		c := n.cache(nil)
		shared, other := randBytes(1, 300<<10), randBytes(2, 300<<10)
		names := []string{"usr/lib/shared.so", "usr/lib/differs.so"}
		a := writeFiles(t, "a", n.fsDir("a"), names, map[string][]byte{names[0]: shared, names[1]: shared})
		b := writeFiles(t, "b", n.fsDir("b"), names, map[string][]byte{names[0]: shared, names[1]: other})
		var st ScanStats
		if err := c.hashJobs(context.Background(), append(a, b...), &st); err != nil {
			t.Fatal(err)
		}
		if st.Ingested != 1 || st.IngestedBytes != uint64(len(shared)) || st.HashedFiles != 4 {
			t.Fatalf("stats %+v, want the shared file stored while hashed", st)
		}
		if got := mustRead(t, c.objectPath(sha(shared))); !bytes.Equal(got, shared) {
			t.Fatal("stored object differs from the file")
		}
		if _, err := os.Stat(c.objectPath(sha(other))); err == nil {
			t.Fatal("a file that is not shared was stored")
		}
		if ing, _ := os.ReadDir(filepath.Join(c.Root(), ingestDir)); len(ing) != 0 {
			t.Fatalf("ingest files left: %v", ing)
		}
		ix, err := c.loadIndex()
		if err != nil || !c.objectOK(ix, sha(shared), uint64(len(shared))) {
			t.Fatalf("stored object not indexed: %v", err)
		}
	})
}

// TestHashJobsChangedWhileHashed: a file rewritten while it is hashed (and
// copied into the store) gets no digest and its copy is not stored; one
// truncated under the scan neither.
func TestHashJobsChangedWhileHashed(t *testing.T) {
	bothHashers(t, func(t *testing.T) {
		n := newNode(t)
		c := n.cache(nil)
		orig := randBytes(3, 3*hashBufSize)
		names := []string{"usr/lib/x.so", "usr/lib/y.so"}
		files := map[string][]byte{names[0]: orig, names[1]: orig}
		a := writeFiles(t, "a", n.fsDir("a"), names, files)
		b := writeFiles(t, "b", n.fsDir("b"), names, files)
		bx := filepath.Join(n.fsDir("b"), baseName, names[0])
		by := filepath.Join(n.fsDir("b"), baseName, names[1])
		changed := randBytes(4, len(orig))
		teed := 0 // ingest files seen while b's files were read
		hashReadHook = func(j *hashJob, read uint64) {
			if j.id != "b" || read != hashBufSize {
				return
			}
			ing, _ := os.ReadDir(filepath.Join(c.Root(), ingestDir))
			teed = max(teed, len(ing))
			switch j.rel {
			case names[0]: // same size, other bytes behind what was read
				if f, err := os.OpenFile(bx, os.O_WRONLY, 0); err == nil {
					f.WriteAt(changed[hashBufSize:], hashBufSize)
					f.Close()
				}
			case names[1]:
				os.Truncate(by, hashBufSize+100)
			}
		}
		defer func() { hashReadHook = nil }()
		var st ScanStats
		if err := c.hashJobs(context.Background(), append(a, b...), &st); err != nil {
			t.Fatal(err)
		}
		for _, j := range a {
			if !j.ok || j.digest != sha(orig) {
				t.Fatalf("container a %s: ok %v", j.rel, j.ok)
			}
		}
		for _, j := range b {
			if j.ok && j.digest == sha(orig) {
				t.Fatalf("container b %s: digest of the content before the change", j.rel)
			}
		}
		if teed == 0 {
			t.Fatal("b's files were not copied while hashed: the test tests nothing")
		}
		if st.Ingested != 0 {
			t.Fatalf("stats %+v: a file changed while hashed was stored", st)
		}
		if _, err := os.Stat(c.objectPath(sha(orig))); err == nil {
			t.Fatal("object stored from a changed file")
		}
		if ing, _ := os.ReadDir(filepath.Join(c.Root(), ingestDir)); len(ing) != 0 {
			t.Fatalf("ingest files left: %v", ing)
		}
	})
}
