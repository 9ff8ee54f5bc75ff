package connmark

import "testing"

func TestMarks(t *testing.T) {
	for _, tc := range []struct {
		m       Mark
		out, in uint32
	}{
		{Mark{ID: 1, Mask: DefaultMask}, 0x01000000, 0x81000000},
		{Mark{ID: 127, Mask: DefaultMask}, 0x7f000000, 0xff000000},
		{Mark{ID: 3, Mask: 0x00f0}, 0x0030, 0x00b0},
		{Mark{ID: 1, Mask: 0x3}, 0x1, 0x3},
	} {
		if got := tc.m.Out(); got != tc.out {
			t.Errorf("%+v.Out() = %#x, want %#x", tc.m, got, tc.out)
		}
		if got := tc.m.In(); got != tc.in {
			t.Errorf("%+v.In() = %#x, want %#x", tc.m, got, tc.in)
		}
	}
}

func TestCheckMask(t *testing.T) {
	for mask, ok := range map[uint32]bool{
		DefaultMask: true, 0x3: true, 0xffffffff: true, 0x00ff0000: true,
		0: false, 0x1: false, 0x80000000: false, 0xff00ff00: false, 0x5: false,
	} {
		if err := CheckMask(mask); (err == nil) != ok {
			t.Errorf("CheckMask(%#x) = %v", mask, err)
		}
	}
	if got := MaxID(DefaultMask); got != 127 {
		t.Errorf("MaxID(default) = %d, want 127", got)
	}
}

// The seed's rt_tables numbers (200, 201) and the largest table must get an
// id without isp-mark; those that fit keep their number.
func TestDefaultID(t *testing.T) {
	for _, tc := range []struct {
		table int
		mask  uint32
		id    uint32
	}{
		{100, DefaultMask, 100},
		{127, DefaultMask, 127},
		{128, DefaultMask, 1},
		{200, DefaultMask, 73},
		{201, DefaultMask, 74},
		{256, DefaultMask, 2},
		{4294967295, DefaultMask, 4294967294%127 + 1},
		{5, 0x3, 1},
		{0, DefaultMask, 0},
	} {
		id := DefaultID(tc.table, tc.mask)
		if id != tc.id {
			t.Errorf("DefaultID(%d, %#x) = %d, want %d", tc.table, tc.mask, id, tc.id)
		}
		if tc.table > 0 && (id < 1 || id > MaxID(tc.mask)) {
			t.Errorf("DefaultID(%d, %#x) = %d: outside 1..%d", tc.table, tc.mask, id, MaxID(tc.mask))
		}
	}
}
