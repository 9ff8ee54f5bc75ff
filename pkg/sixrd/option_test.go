package sixrd

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseOption(t *testing.T) {
	got, err := ParseOption("14 32 2001:db8:: 192.0.2.1 192.0.2.2")
	want := Option{IPv4MaskLen: 14, Prefix: netip.MustParsePrefix("2001:db8::/32"), Relay: netip.MustParseAddr("192.0.2.1")}
	if err != nil || got != want {
		t.Fatalf("ParseOption: %+v, %v; want %+v", got, err, want)
	}
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"33 32 2001:db8:: 192.0.2.1", ErrMaskLen},
		{"0 40 2001:db8:: 192.0.2.1", ErrTooLong}, // a /72
		{"14 0 2001:db8:: 192.0.2.1", ErrPrefix},
		{"14 129 2001:db8:: 192.0.2.1", ErrPrefix},
		{"14 32 2001:db8:1:: 192.0.2.1", ErrPrefix}, // host bits
		{"14 32 192.0.2.9 192.0.2.1", ErrPrefix},
		{"14 32 2001:db8:: 2001:db8::1", ErrIPv4},
		{"14 32 2001:db8:: 224.0.0.1", ErrIPv4},
		{"14 32 2001:db8:: $(reboot)", ErrIPv4},
		{"-1 32 2001:db8:: 192.0.2.1", ErrMaskLen},
	} {
		if _, err := ParseOption(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("ParseOption(%q): %v, want %v", tc.in, err, tc.want)
		}
	}
	if _, err := ParseOption("14 32"); err == nil {
		t.Error("a short option 212 accepted")
	}
	if _, err := ParseOption(strings.Repeat("9", 10000) + " 32 2001:db8:: 192.0.2.1"); err == nil || len(err.Error()) > 200 {
		t.Errorf("10 000 bytes: %v", err)
	}
}
