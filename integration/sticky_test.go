package integration

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
)

// TestSticky: when the preferred link comes back, a TCP stream NATed to
// the backup stays on it with isp-sticky (new flows take the preferred
// link), and is moved without (its connection breaks, and the client's
// next one leaves by the preferred link).
func TestSticky(t *testing.T) {
	for _, sticky := range []bool{true, false} {
		t.Run(fmt.Sprintf("isp-sticky %v", sticky), func(t *testing.T) {
			stanzas := lab.TwoISPs
			if sticky {
				stanzas = strings.Replace(stanzas, "\tisp-metric 1\n", "\tisp-metric 1\n\tisp-sticky yes\n", 1)
			}
			l := lab.New(t)
			l.Install(bin)
			l.Interfaces(stanzas)
			l.EchoServers()
			// The administrator's own connection marks, outside ifisp's
			// bits: they must stay as set, and ifisp's beside them.
			l.Must(l.Router, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "lan0", "-j", "CONNMARK", "--set-xmark", "0x5/0xff")
			l.MustIfup("wana", "wanb")
			l.MustIfdown("wanb")
			f := &flows{names: []string{"tcp"}, flows: []*lab.Flow{l.StartFlow("tcp", time.Minute)}}
			f.working(t)
			if got, mark := natTo(t, l); got != l.A.Router || mark != 0x64000005 {
				t.Fatalf("before failback the stream is NATed to %q with mark %#x, want wana's %s, mark 0x64000005 (wana's outbound and the administrator's 0x5)", got, mark, l.A.Router)
			}

			began := time.Now()
			l.MustIfup("wanb")
			done := time.Now()
			want := l.A.Router
			if !sticky {
				want = l.B.Router
			}
			f.wait(done, done.Add(5*time.Second))
			if got, _ := natTo(t, l); got != want {
				t.Errorf("after failback the stream is NATed to %q, want %s", got, want)
			}
			if r := f.recovered(t, began, done, !sticky)["tcp"]; !sticky && r.Resets == 0 {
				t.Error("without isp-sticky the stream's connection survived failback, want it moved to wanb")
			}
			if got := carrier(t, l); got != "ispb" {
				t.Errorf("after failback new flows leave by %s, want ispb", got)
			}
			noSpoofing(t, l)
		})
	}
}

// natTo returns the address the LAN's TCP stream to the echo server is
// NATed to, its conntrack entry's reply destination, and the entry's mark
// ("" with no entry, or several).
func natTo(t *testing.T, l *lab.Lab) (string, uint64) {
	t.Helper()
	out := l.Must(l.Router, "sh", "-c", fmt.Sprintf("conntrack -L -p tcp --orig-port-dst %d --state ESTABLISHED 2>/dev/null", lab.FlowPort))
	var to []string
	var mark uint64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		// ... src=LAN dst=INET sport dport src=INET dst=NAT ...
		var dsts []string
		for _, w := range f {
			if d, ok := strings.CutPrefix(w, "dst="); ok {
				dsts = append(dsts, d)
			}
			if m, ok := strings.CutPrefix(w, "mark="); ok {
				mark, _ = strconv.ParseUint(m, 10, 32)
			}
		}
		if len(dsts) == 2 {
			to = append(to, dsts[1])
		}
	}
	if len(to) != 1 {
		t.Logf("conntrack: %s", out)
		return "", 0
	}
	return to[0], mark
}
