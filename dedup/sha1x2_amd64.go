package dedup

import "golang.org/x/sys/cpu"

// blockSHANIx2 hashes blocks 64-byte blocks at pa into a and at pb into b
// (sha1x2_amd64.s). It needs the SHA extensions, SSSE3 and SSE4.1.
//
//go:noescape
func blockSHANIx2(a, b *[5]uint32, pa, pb *byte, blocks int)

func cpuidSHA() bool

// haveSHA1x2 reports whether blockSHANIx2 can run here.
var haveSHA1x2 = cpu.X86.HasSSSE3 && cpu.X86.HasSSE41 && cpuidSHA()
