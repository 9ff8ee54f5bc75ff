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
