package dedup

import "encoding/binary"

// SHA1 of two streams at once. One SHA1 stream on the SHA extensions is
// bound by the latency of its round instruction, so a second, independent
// stream interleaved with it costs little: blockSHANIx2 (sha1x2_amd64.s)
// hashes a block of each of two streams in about the time crypto/sha1 takes
// for one (measured on the bench machine: 1.7 GiB/s for crypto/sha1, see
// BenchmarkSHA1x2). The scan hashes its files in pairs with it (hashJobs);
// without the SHA extensions it uses crypto/sha1 one file at a time.

// sha1Stream is the state of one SHA1 stream fed whole 64-byte blocks.
type sha1Stream struct {
	h [5]uint32
	n uint64 // bytes hashed
}

func (s *sha1Stream) reset() {
	s.h = [5]uint32{0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0}
	s.n = 0
}

// blocks2 hashes pa into a and pb into b; len(pa) == len(pb), a multiple
// of 64.
func blocks2(a, b *sha1Stream, pa, pb []byte) {
	if len(pa) != len(pb) || len(pa)%64 != 0 {
		panic("dedup: blocks2: bad lengths")
	}
	if len(pa) == 0 {
		return
	}
	blockSHANIx2(&a.h, &b.h, &pa[0], &pb[0], len(pa)/64)
	a.n += uint64(len(pa))
	b.n += uint64(len(pb))
}

// blocks1 hashes p (a multiple of 64 bytes) into s alone: the second lane
// hashes the same bytes into a scratch state, at no extra time.
func blocks1(s *sha1Stream, p []byte) {
	var scratch sha1Stream
	scratch.h = s.h
	blocks2(s, &scratch, p, p)
}

// sum pads the stream's last bytes (fewer than 64) and returns the digest.
func (s *sha1Stream) sum(tail []byte) [20]byte {
	if len(tail) >= 64 {
		panic("dedup: sha1Stream.sum: tail of a whole block")
	}
	total := s.n + uint64(len(tail))
	var pad [128]byte
	copy(pad[:], tail)
	pad[len(tail)] = 0x80
	end := 64
	if len(tail) >= 56 {
		end = 128
	}
	binary.BigEndian.PutUint64(pad[end-8:end], total<<3)
	blocks1(s, pad[:end])
	var d [20]byte
	for i, v := range s.h {
		binary.BigEndian.PutUint32(d[4*i:], v)
	}
	return d
}

func hexDigest(d [20]byte) []byte {
	const hx = "0123456789abcdef"
	out := make([]byte, 40)
	for i, c := range d {
		out[2*i], out[2*i+1] = hx[c>>4], hx[c&15]
	}
	return out
}
