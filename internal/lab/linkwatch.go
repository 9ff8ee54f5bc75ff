package lab

import (
	"slices"
	"strings"
	"time"
)

// WaitLinkWatch waits until the kernel's link watch has caught up on every
// interface of the router: each one's operational state (`ip -br link`'s
// second column) is what its flags call for. The kernel sets an
// interface's flags at once (UP at `ip link set up`, LOWER_UP with the
// carrier), but its operational state, and with it the IPv6 link-local
// address and routes that addrconf adds when the link becomes ready, only
// when its link watch runs, which the kernel rate-limits to once a second:
// after a burst of ifup and ifdown up to a second late. State shows the
// flags, the addresses and the routes; a test that compares it right after
// an interface changed waits for this first. It fails the test if the
// link watch has not caught up within timeout.
func (l *Lab) WaitLinkWatch(timeout time.Duration) {
	l.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		out := l.Must(l.Router, "ip", "-br", "link")
		lagging := linkWatchLagging(out)
		if len(lagging) == 0 {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("the kernel's link watch has not caught up on %s after %s:\n%s", strings.Join(lagging, ", "), timeout, out)
		}
	}
}

// linkWatchLagging returns the interfaces of `ip -br link` output whose
// operational state is not yet the one their flags call for: DOWN when
// the interface is down; UP (UNKNOWN for one with no notion of carrier,
// such as lo or a tunnel) when it is up with carrier; DOWN or
// LOWERLAYERDOWN when it is up without.
func linkWatchLagging(out string) []string {
	var lagging []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		var flags []string
		for _, x := range f[2:] {
			if strings.HasPrefix(x, "<") {
				flags = strings.Split(strings.Trim(x, "<>"), ",")
			}
		}
		var want []string
		switch {
		case !slices.Contains(flags, "UP"):
			want = []string{"DOWN"}
		case slices.Contains(flags, "LOWER_UP"):
			want = []string{"UP", "UNKNOWN"}
		default:
			want = []string{"DOWN", "LOWERLAYERDOWN"}
		}
		if !slices.Contains(want, f[1]) {
			lagging = append(lagging, f[0]+" "+f[1]+" <"+strings.Join(flags, ",")+">")
		}
	}
	return lagging
}
