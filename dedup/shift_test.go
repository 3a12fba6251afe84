package dedup

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestShiftID(t *testing.T) {
	for _, c := range []struct{ id, from, to, want uint32 }{
		{0, 0, 100000, 100000},
		{65535, 0, 100000, 165535},
		{100005, 100000, 200000, 200005},
		{100005, 100000, 0, 5},
		{33, 100000, 200000, 200033}, // host root's write into a shifted view: a container id
		{70000, 0, 100000, 70000},    // unmapped: left alone
		{300000, 100000, 0, 300000},  // unmapped: left alone
		{4294967295, 0, 100000, 4294967295},
	} {
		if got := shiftID(c.id, c.from, c.to); got != c.want {
			t.Errorf("shiftID(%d, %d, %d) = %d, want %d", c.id, c.from, c.to, got, c.want)
		}
	}
}

func TestShiftCapsAndACL(t *testing.T) {
	w := &shifter{from: idShift{100000, 100000}, to: idShift{200000, 300000}}
	v3 := make([]byte, 24)
	binary.LittleEndian.PutUint32(v3, 0x03000001)
	binary.LittleEndian.PutUint32(v3[4:], 1<<13)
	binary.LittleEndian.PutUint32(v3[20:], 100000)
	got := w.shiftCaps(v3)
	if r := binary.LittleEndian.Uint32(got[20:]); r != 200000 || !bytes.Equal(got[:20], v3[:20]) {
		t.Errorf("v3: %x", got)
	}
	// A v2 capability is the host root's: the container's root gets it.
	w0 := &shifter{from: idShift{}, to: idShift{200000, 300000}}
	got = w0.shiftCaps(capV2())
	if len(got) != 24 || binary.LittleEndian.Uint32(got) != 0x03000001 || binary.LittleEndian.Uint32(got[20:]) != 200000 || !bytes.Equal(got[4:20], capV2()[4:20]) {
		t.Errorf("v2: %x", got)
	}
	// Named user and group entries move; the others keep their id.
	nv, changed := w.shiftACL(aclXattr(101000, 101001))
	if !changed || !bytes.Equal(nv, aclXattr(201000, 301001)) {
		t.Errorf("acl: %x", nv)
	}
	if _, changed := w.shiftACL([]byte{1, 2, 3}); changed {
		t.Error("a malformed ACL was changed")
	}
}
