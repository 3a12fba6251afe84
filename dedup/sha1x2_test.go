package dedup

import (
	"crypto/sha1"
	"math/rand/v2"
	"testing"
)

func requireSHA1x2(tb testing.TB) {
	tb.Helper()
	if !haveSHA1x2 {
		tb.Skip("no SHA extensions on this CPU: the scan uses crypto/sha1")
	}
}

// sum2 hashes two whole messages, the common blocks in pairs and the rest
// of the longer one alone, as hashJobs does.
func sum2(a, b []byte) ([20]byte, [20]byte) {
	var sa, sb sha1Stream
	sa.reset()
	sb.reset()
	k := min(len(a), len(b)) &^ 63
	blocks2(&sa, &sb, a[:k], b[:k])
	a, b = a[k:], b[k:]
	ka, kb := len(a)&^63, len(b)&^63
	blocks1(&sa, a[:ka])
	blocks1(&sb, b[:kb])
	return sa.sum(a[ka:]), sb.sum(b[kb:])
}

func TestSHA1x2(t *testing.T) {
	requireSHA1x2(t)
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	check := func(a, b []byte) {
		t.Helper()
		da, db := sum2(a, b)
		if da != sha1.Sum(a) || db != sha1.Sum(b) {
			t.Fatalf("lengths %d, %d: got %x %x, want %x %x", len(a), len(b), da, db, sha1.Sum(a), sha1.Sum(b))
		}
	}
	// Every padding case (tails of 0..63 bytes, one or two final blocks),
	// against every other.
	for la := 0; la <= 200; la++ {
		for lb := 0; lb <= 200; lb += 7 {
			check(buf[la:2*la], buf[500:500+lb])
		}
	}
	for range 200 {
		la, lb := r.IntN(len(buf)/2), r.IntN(len(buf)/2)
		check(buf[:la], buf[len(buf)-lb:])
	}
	// Known answers (FIPS 180 examples).
	da, db := sum2([]byte("abc"), []byte("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
	if got := string(hexDigest(da)); got != "a9993e364706816aba3e25717850c26c9cd0d89d" {
		t.Fatalf("sha1(abc) = %s", got)
	}
	if got := string(hexDigest(db)); got != "84983e441c3bd26ebaae4aa1f95129e5e54670f1" {
		t.Fatalf("sha1(abcdbcde…) = %s", got)
	}
}

func BenchmarkSHA1x2(b *testing.B) {
	requireSHA1x2(b)
	buf := make([]byte, 2<<20)
	var s1, s2 sha1Stream
	s1.reset()
	s2.reset()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		blocks2(&s1, &s2, buf[:1<<20], buf[1<<20:])
	}
}

func BenchmarkSHA1Std(b *testing.B) {
	buf := make([]byte, 2<<20)
	h := sha1.New()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		h.Write(buf)
	}
}

// FuzzSHA1x2: any two messages hash as with crypto/sha1
// (go test ./dedup -run '^$' -fuzz FuzzSHA1x2).
func FuzzSHA1x2(f *testing.F) {
	f.Add([]byte(""), []byte("abc"))
	f.Add(make([]byte, 55), make([]byte, 64))
	f.Add(make([]byte, 300), make([]byte, 129))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		requireSHA1x2(t)
		da, db := sum2(a, b)
		if da != sha1.Sum(a) || db != sha1.Sum(b) {
			t.Fatalf("lengths %d, %d: got %x %x", len(a), len(b), da, db)
		}
	})
}
