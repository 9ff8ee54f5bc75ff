package integration

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/pkg/lab"
)

// newFailoverLab brings both ISPs up with every hook installed and the
// internet host's echo servers running.
func newFailoverLab(t *testing.T) *lab.Lab {
	l := newRouteLab(t)
	l.EchoServers()
	l.MustIfup("wana", "wanb")
	return l
}

// carrier returns which ISP the LAN's IPv4 packets leave by now: it counts
// what each ISP's edge sees during a short burst of pings.
func carrier(t *testing.T, l *lab.Lab) string {
	t.Helper()
	a, b := l.Seen(&l.A, 4).Legit, l.Seen(&l.B, 4).Legit
	if got := l.Ping(l.LAN, lab.Internet, 5); got != 5 {
		t.Errorf("LAN ping: %d of 5 answered", got)
	}
	da, db := l.Seen(&l.A, 4).Legit-a, l.Seen(&l.B, 4).Legit-b
	switch {
	case da >= 5 && db == 0:
		return "ispa"
	case db >= 5 && da == 0:
		return "ispb"
	}
	return fmt.Sprintf("ispa %d, ispb %d packets", da, db)
}

// flows is an ICMP, a UDP and a TCP flow from the LAN across steps; check
// makes sure each recovered: its last second answered in full.
type flows struct {
	icmp, udp, tcp *lab.Flow
}

func startFlows(l *lab.Lab, d time.Duration) *flows {
	return &flows{icmp: l.StartFlow("icmp", d), udp: l.StartFlow("udp", d), tcp: l.StartFlow("tcp", d)}
}

func (f *flows) check(t *testing.T, allowResets bool) {
	t.Helper()
	for name, flow := range map[string]*lab.Flow{"icmp": f.icmp, "udp": f.udp, "tcp": f.tcp} {
		r := flow.Wait()
		t.Logf("%s flow: %+v", name, r)
		if r.TailReceived < r.TailSent-1 {
			t.Errorf("%s flow stuck: %d of the last second's %d requests answered", name, r.TailReceived, r.TailSent)
		}
		if !allowResets && r.Resets > 0 {
			t.Errorf("%s flow: the connection broke %d times, want 0", name, r.Resets)
		}
	}
}

// TestFailoverPreferred takes the preferred ISP (B) down and up under
// ICMP, UDP and TCP traffic: the flows move to A and back, nothing is ever
// spoofed, nothing is stuck.
func TestFailoverPreferred(t *testing.T) {
	l := newFailoverLab(t)
	if got := carrier(t, l); got != "ispb" {
		t.Fatalf("both up: LAN traffic leaves by %s, want ispb", got)
	}
	f := startFlows(l, 4*time.Second)
	time.Sleep(time.Second)
	l.MustIfdown("wanb")
	time.Sleep(2 * time.Second)
	f.check(t, true)
	settled(t, l, "wanb down", "ispa")

	f = startFlows(l, 4*time.Second)
	time.Sleep(time.Second)
	l.MustIfup("wanb")
	time.Sleep(2 * time.Second)
	f.check(t, true)
	settled(t, l, "wanb up again", "ispb")
}

// settled checks that LAN traffic now leaves by the ISP want, and that no
// spoofed packet ever reached an ISP.
func settled(t *testing.T, l *lab.Lab, when, want string) {
	t.Helper()
	if got := carrier(t, l); got != want {
		t.Errorf("%s: LAN traffic leaves by %s, want %s", when, got, want)
	}
	if n := l.Spoofed(); n != 0 {
		t.Errorf("%s: the ISPs dropped %d spoofed packets, want 0", when, n)
	}
}

// TestFailoverBackup cycles the backup ISP (A): the flows on the healthy
// preferred link are never disturbed, the TCP connection never breaks, and
// 2,000 more flows keep their very conntrack entries.
func TestFailoverBackup(t *testing.T) {
	l := newFailoverLab(t)
	l.UDPBurst(2000)
	before := flowIDs(t, l)
	if len(before) < 2000 {
		t.Fatalf("%d conntrack entries for the burst, want 2000", len(before))
	}
	f := startFlows(l, 4*time.Second)
	time.Sleep(500 * time.Millisecond)
	l.MustIfdown("wana")
	time.Sleep(time.Second)
	l.MustIfup("wana")
	time.Sleep(time.Second)
	f.check(t, false)
	after := flowIDs(t, l)
	lost := 0
	for id, line := range before {
		if _, ok := after[id]; !ok {
			lost++
			t.Logf("lost: %s", line)
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d flows on the healthy link lost their conntrack entry", lost, len(before))
	}
	settled(t, l, "wana down and up", "ispb")
}

// TestFailoverBoth takes both ISPs down, then both up.
func TestFailoverBoth(t *testing.T) {
	l := newFailoverLab(t)
	f := startFlows(l, 5*time.Second)
	time.Sleep(500 * time.Millisecond)
	l.MustIfdown("wana", "wanb")
	time.Sleep(time.Second)
	l.MustIfup("wana", "wanb")
	time.Sleep(2 * time.Second)
	f.check(t, true)
	settled(t, l, "both down and up", "ispb")
	// Every LAN flow left is NATed to the preferred link.
	for _, line := range flowIDs(t, l) {
		if strings.Contains(line, "src=10.1.0.10") && !strings.Contains(line, "dst=203.0.113.2") {
			t.Errorf("a LAN flow is left un-NATed or NATed elsewhere: %s", line)
		}
	}
}

var conntrackID = regexp.MustCompile(`(?m)^(udp .* id=(\d+))`)

// flowIDs returns the router's UDP flows to the echo server, by conntrack
// id.
func flowIDs(t *testing.T, l *lab.Lab) map[string]string {
	t.Helper()
	// conntrack's summary goes to stderr, which would run into the lines.
	out := l.Must(l.Router, "sh", "-c", fmt.Sprintf("conntrack -L -p udp --dport %d -o id 2>/dev/null", lab.FlowPort))
	ids := map[string]string{}
	for _, m := range conntrackID.FindAllStringSubmatch(out, -1) {
		ids[m[2]] = m[1]
	}
	return ids
}
