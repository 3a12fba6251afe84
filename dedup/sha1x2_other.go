//go:build !amd64

package dedup

var haveSHA1x2 = false

func blockSHANIx2(a, b *[5]uint32, pa, pb *byte, blocks int) {
	panic("dedup: blockSHANIx2 without the SHA extensions")
}
