package integration

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
)

// newFailoverLab brings both ISPs up with every hook installed and the
// internet host's echo servers running.
func newFailoverLab(t *testing.T) *lab.Lab {
	l := newRouteLab(t)
	l.EchoServers()
	l.MustIfup("wana", "wanb")
	return l
}

// carrier returns which ISP the LAN's IPv4 packets leave by now.
func carrier(t *testing.T, l *lab.Lab) string {
	t.Helper()
	return via(t, l, 4)
}

// The margins of the flow checks. Each is many of the flows' request
// periods (20 ms), so that a busy machine does not miss it; a flow that is
// stuck misses every one.
const (
	// recoverRun requests answered in a row (half a second of them) is a
	// flow that works.
	recoverRun = 25
	// recoverIn is how soon after a change was complete a flow must work
	// again, on top of how long the change took: TCP backs off its
	// retransmissions, so a segment lost early in an outage is sent again
	// about as long after the outage as the outage lasted.
	recoverIn = 2 * time.Second
	// steady is how long a flow that works again is watched; at most
	// maxLost of its requests may go unanswered then.
	steady  = time.Second
	maxLost = 3
	// grace: the requests of a flow's last moment may still wait for their
	// answers when it is stopped; they are not judged.
	grace = 200 * time.Millisecond
)

// flows is an ICMP, a UDP and a TCP flow from the LAN, started afresh for
// each change.
type flows struct {
	names []string
	flows []*lab.Flow
}

// startFlows starts the three flows (a minute at most: they are stopped
// once judged) and waits until each works: recoverRun requests in a row
// answered, within 5 s.
func startFlows(t *testing.T, l *lab.Lab) *flows {
	t.Helper()
	f := &flows{}
	for _, proto := range []string{"icmp", "udp", "tcp"} {
		f.names = append(f.names, proto)
		f.flows = append(f.flows, l.StartFlow(proto, time.Minute))
	}
	f.working(t)
	return f
}

// working waits until each of f's flows works: recoverRun requests in a
// row answered, within 5 s of now.
func (f *flows) working(t *testing.T) {
	t.Helper()
	start := time.Now()
	if !f.wait(start, start.Add(5*time.Second)) {
		for i, flow := range f.flows {
			t.Errorf("%s flow: %s", f.names[i], describe(flow.Requests(), start, "its start"))
		}
		t.FailNow()
	}
}

// wait waits until every flow works again after from, or until deadline;
// it reports whether they all do.
func (f *flows) wait(from, deadline time.Time) bool {
	rs := make([]requester, len(f.flows))
	for i, flow := range f.flows {
		rs[i] = flow
	}
	return waitRecovery(from, deadline, rs...)
}

// requester is a flow or a ping: its requests can be read as it runs.
type requester interface{ Requests() lab.Requests }

// waitRecovery waits until each of rs has answered recoverRun requests in
// a row sent since from, or until deadline; it reports whether all have.
func waitRecovery(from, deadline time.Time, rs ...requester) bool {
	for ; ; time.Sleep(20 * time.Millisecond) {
		all := true
		for _, r := range rs {
			if _, ok := r.Requests().Recovery(from, recoverRun); !ok {
				all = false
			}
		}
		if all {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// recovered judges the flows against a change that began at began and was
// complete at done (the ifdown or ifup returned): each must work again,
// recoverRun requests in a row answered, the first of them sent no later
// than recoverIn plus the change's own time after done; from then on at
// most maxLost of its requests may go unanswered, over steady; and, unless
// allowResets, its TCP connection must never break. It stops the flows
// and returns what they saw, by name.
func (f *flows) recovered(t *testing.T, began, done time.Time, allowResets bool) map[string]lab.FlowResult {
	t.Helper()
	by := done.Add(done.Sub(began) + recoverIn)
	f.wait(done, by.Add(recoverRun*20*time.Millisecond+grace))
	time.Sleep(steady)
	results := map[string]lab.FlowResult{}
	for i, flow := range f.flows {
		name, r := f.names[i], flow.Stop()
		results[name] = r
		at, ok := r.Requests.Recovery(done, recoverRun)
		t.Logf("%s flow: %s; the change took %s; %s; longest gap since it began %s", name, r, done.Sub(began).Round(time.Millisecond),
			describe(r.Requests, done, "it was complete"), r.Requests.Gap(began, r.End.Add(-grace)).Round(time.Millisecond))
		if !ok || at.After(by) {
			t.Errorf("%s flow stuck: %s, want them by %s after it", name, describe(r.Requests, done, "the change was complete"), by.Sub(done).Round(time.Millisecond))
			continue
		}
		if sent, answered := r.Requests.Count(at, r.End.Add(-grace)); sent-answered > maxLost {
			t.Errorf("%s flow: once it worked again, %d of its %d requests went unanswered, want at most %d", name, sent-answered, sent, maxLost)
		}
		if !allowResets && r.Resets > 0 {
			t.Errorf("%s flow: the connection broke %d times, want 0", name, r.Resets)
		}
	}
	return results
}

// describe says how a flow fared since an event: whether, and when, it
// answered recoverRun requests in a row.
func describe(rs lab.Requests, from time.Time, event string) string {
	sent, answered := rs.Count(from, time.Now().Add(time.Hour))
	first, ok := rs.FirstAnswered(from)
	s := fmt.Sprintf("%d of the %d requests sent since %s answered", answered, sent, event)
	if !ok {
		return s + ", none of them"
	}
	s += fmt.Sprintf(", the first sent %s after it", first.Sent.Sub(from).Round(time.Millisecond))
	if at, ok := rs.Recovery(from, recoverRun); ok {
		return s + fmt.Sprintf("; %d in a row from %s after it", recoverRun, at.Sub(from).Round(time.Millisecond))
	}
	return s + fmt.Sprintf("; never %d in a row", recoverRun)
}

// TestFailoverPreferred takes the preferred ISP (B) down and up under
// ICMP, UDP and TCP traffic: the flows move to A and back, nothing is ever
// spoofed, nothing is stuck.
func TestFailoverPreferred(t *testing.T) {
	l := newFailoverLab(t)
	if got := carrier(t, l); got != "ispb" {
		t.Fatalf("both up: LAN traffic leaves by %s, want ispb", got)
	}
	f := startFlows(t, l)
	began := time.Now()
	l.MustIfdown("wanb")
	f.recovered(t, began, time.Now(), true)
	settled(t, l, "wanb down", "ispa")

	f = startFlows(t, l)
	began = time.Now()
	l.MustIfup("wanb")
	f.recovered(t, began, time.Now(), true)
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
// preferred link are never disturbed (at most maxLost requests unanswered
// in all, the TCP connection never breaks), and 2,000 more flows keep
// their very conntrack entries.
func TestFailoverBackup(t *testing.T) {
	l := newFailoverLab(t)
	l.UDPBurst(2000)
	before := flowIDs(t, l)
	if len(before) < 2000 {
		t.Fatalf("%d conntrack entries for the burst, want 2000", len(before))
	}
	f := startFlows(t, l)
	began := time.Now()
	l.MustIfdown("wana")
	time.Sleep(time.Second) // A stays down a while
	l.MustIfup("wana")
	for name, r := range f.recovered(t, began, time.Now(), false) {
		if sent, answered := r.Requests.Count(time.Time{}, r.End.Add(-grace)); sent-answered > maxLost {
			t.Errorf("%s flow on the healthy link: %d of its %d requests went unanswered, want at most %d", name, sent-answered, sent, maxLost)
		}
	}
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
	f := startFlows(t, l)
	began := time.Now()
	l.MustIfdown("wana", "wanb")
	time.Sleep(time.Second) // an outage, for the flows to live through
	l.MustIfup("wana", "wanb")
	f.recovered(t, began, time.Now(), true)
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
