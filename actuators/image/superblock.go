package image

import (
	"encoding/binary"
	"fmt"
	"io/fs"

	"golang.org/x/sys/unix"
)

// The ext4 superblock: 1024 bytes at offset 1024 (see the kernel's
// fs/ext4/ext4.h, struct ext4_super_block). Only the fields vzd needs are
// read; reading them directly avoids a dumpe2fs run per observation.
const (
	sbOffset  = 1024
	sbSize    = 1024
	ext4Magic = 0xEF53

	stateValid  = 0x0001 // cleanly unmounted
	stateErrors = 0x0002 // errors detected

	incompatRecover = 0x0004 // journal needs recovery
	incompatExtents = 0x0040
	incompat64Bit   = 0x0080
)

type superblock struct {
	Inodes     uint64
	FreeInodes uint64
	Blocks     uint64
	FreeBlocks uint64
	BlockSize  uint64
	State      uint16
	Incompat   uint32
	MountTime  uint32 // s_mtime: last mount
	CheckTime  uint32 // s_lastcheck: last e2fsck -f (or mkfs)
}

// Size is the file system's size in bytes.
func (s superblock) Size() uint64 { return s.Blocks * s.BlockSize }

// Clean reports whether the file system was unmounted cleanly and needs
// no check. It is meaningless while the file system is mounted.
func (s superblock) Clean() bool {
	return s.State&stateValid != 0 && s.State&stateErrors == 0 && s.Incompat&incompatRecover == 0
}

// Checked reports whether resize2fs will accept the file system without
// a fresh e2fsck -f: clean and checked since it was last mounted (the
// test resize2fs itself makes, see resize/main.c).
func (s superblock) Checked() bool { return s.Clean() && s.CheckTime >= s.MountTime }

// parseSuperblock decodes b, the 1024 bytes of an ext4 superblock. An ext2
// or ext3 file system (no extents) is refused as not ext4.
func parseSuperblock(b []byte) (superblock, error) {
	if len(b) < sbSize {
		return superblock{}, fmt.Errorf("%w: short superblock", ErrNotExt4)
	}
	le := binary.LittleEndian
	if m := le.Uint16(b[0x38:]); m != ext4Magic {
		return superblock{}, fmt.Errorf("%w: no ext2/3/4 magic", ErrNotExt4)
	}
	s := superblock{
		Inodes:     uint64(le.Uint32(b[0x00:])),
		Blocks:     uint64(le.Uint32(b[0x04:])),
		FreeBlocks: uint64(le.Uint32(b[0x0C:])),
		FreeInodes: uint64(le.Uint32(b[0x10:])),
		State:      le.Uint16(b[0x3A:]),
		Incompat:   le.Uint32(b[0x60:]),
		MountTime:  le.Uint32(b[0x2C:]),
		CheckTime:  le.Uint32(b[0x40:]),
	}
	logBlock := le.Uint32(b[0x18:])
	if logBlock > 6 { // 64 KiB is ext4's largest block
		return superblock{}, fmt.Errorf("%w: bad block size", ErrNotExt4)
	}
	s.BlockSize = 1024 << logBlock
	if s.Incompat&incompat64Bit != 0 {
		s.Blocks |= uint64(le.Uint32(b[0x150:])) << 32
		s.FreeBlocks |= uint64(le.Uint32(b[0x158:])) << 32
	}
	if s.Incompat&incompatExtents == 0 {
		return superblock{}, fmt.Errorf("%w: ext2/ext3 (no extents feature)", ErrNotExt4)
	}
	return s, nil
}

// readSuperblock reads the superblock of the image at path. A missing
// file gives an error wrapping fs.ErrNotExist; anything not ext4 wraps
// ErrNotExt4.
func readSuperblock(path string) (superblock, error) {
	// Three system calls (os.Open adds a stat and the poller's): every
	// pass reads every image's superblock.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return superblock{}, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, sbSize)
	n, err := unix.Pread(fd, b, sbOffset)
	if err != nil {
		return superblock{}, fmt.Errorf("read superblock of %s: %w", path, err)
	}
	if n < sbSize {
		return superblock{}, fmt.Errorf("image %s: %w: file too short", path, ErrNotExt4)
	}
	s, err := parseSuperblock(b)
	if err != nil {
		return superblock{}, fmt.Errorf("image %s: %w", path, err)
	}
	return s, nil
}
