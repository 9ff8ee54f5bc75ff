package watch

import (
	"slices"
	"testing"
)

// rounds feeds a pattern of rounds ('.' answered, 'x' not) and returns the
// state after each, as a string of 'u' and 'd'.
func rounds(h *health, pattern string, down, up int) string {
	var b []byte
	for _, c := range pattern {
		h.round(c == '.', down, up)
		b = append(b, byte(h.state[0]))
	}
	return string(b)
}

func TestHealthHysteresis(t *testing.T) {
	for _, tc := range []struct {
		name, pattern, want string
	}{
		{"down after 3 bad in a row", "..xxx..", "uuuuddd"},
		{"an answer resets the count", "xx.xx.xx", "uuuuuuuu"},
		{"up after 4 good in a row", "xxx....", "uuddddu"},
		{"a miss restarts the way up", "xxx...x....", "uuddddddddu"},
		{"flapping faster than up stays down", "xxx..xx..xx..", "uuddddddddddd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &health{state: Up}
			if got := rounds(h, tc.pattern, 3, 4); got != tc.want {
				t.Errorf("%s: states %s, want %s", tc.pattern, got, tc.want)
			}
		})
	}
}

func TestHealthFail(t *testing.T) {
	h := &health{state: Up}
	if !h.fail() || h.state != Down {
		t.Fatalf("fail on an up link: %+v, want a change to down", h)
	}
	rounds(h, "...", 3, 4)
	if h.fail() {
		t.Error("fail on a down link reported a change")
	}
	// The carrier loss took the good rounds: four more are needed.
	if got := rounds(h, "....", 3, 4); got != "dddu" {
		t.Errorf("after a fail on the way up: %s, want dddu", got)
	}
}

func TestWithdrawals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		links []candidate
		want  []bool
	}{
		{"one down, one up", []candidate{{"inet", Down, true}, {"inet", Up, true}}, []bool{true, false}},
		{"both down: last resort", []candidate{{"inet", Down, true}, {"inet", Down, true}}, []bool{false, false}},
		{"the up link has no default to take over", []candidate{{"inet", Down, true}, {"inet", Up, false}}, []bool{false, false}},
		{"families are judged apart", []candidate{{"inet", Down, true}, {"inet6", Up, true}, {"inet6", Down, true}}, []bool{false, false, true}},
		{"all up", []candidate{{"inet", Up, true}, {"inet", Up, true}}, []bool{false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := withdrawals(tc.links); !slices.Equal(got, tc.want) {
				t.Errorf("withdrawals(%v) = %v, want %v", tc.links, got, tc.want)
			}
		})
	}
}
