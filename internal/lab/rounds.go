package lab

import (
	"fmt"
	"strings"
	"time"

	"github.com/ifisp/ifisp/pkg/stanza"
	"github.com/ifisp/ifisp/pkg/watch"
)

// The monitor's probe rounds and notify hooks, as events a test waits for
// instead of sleeping.

// Fresh returns the first state file the monitor writes after the call:
// its probe figures are no older than the call, so it is the moment of
// interest for WaitRounds and WaitAnswered. It fails the test if none is
// written within timeout. The monitor rewrites the file on every change
// and every --metrics-interval (5 s by default): a test that counts
// rounds starts it with a short one.
func (w *Watch) Fresh(timeout time.Duration) *watch.Status {
	w.l.t.Helper()
	asked := time.Now()
	for deadline := asked.Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if s := w.Status(); s != nil && s.Written.After(asked) {
			return s
		}
		if time.Now().After(deadline) {
			w.l.t.Fatalf("ifisp-watch wrote no state file in the %s after %s (is its --metrics-interval short?): %+v\nlog:\n%s",
				timeout, asked.Format("15:04:05.000"), w.Status(), w.Log())
		}
	}
}

// WaitRounds waits until the monitor has judged, and acted on, n probe
// rounds of each of links ("IFACE FAMILY"; none: every link since lists)
// after the state file since was written, and returns the state file that
// showed it. The state file counts a round once the monitor has judged
// it; a transition the round caused is only complete once the next round
// is counted too, so WaitRounds waits for that one as well. It fails the
// test after timeout, or when a link is no longer watched or was brought
// up again (its count began anew). Rounds are the proof that the monitor
// ran: a test that asserts that nothing changed waits for some first.
func (w *Watch) WaitRounds(since *watch.Status, n uint64, timeout time.Duration, links ...string) *watch.Status {
	w.l.t.Helper()
	return w.waitProbes(since, n, timeout, "rounds", func(p watch.ProbeStats) uint64 { return p.Rounds }, links)
}

// WaitAnswered is WaitRounds for answered rounds: n rounds that some target
// answered, after since, of each of links.
func (w *Watch) WaitAnswered(since *watch.Status, n uint64, timeout time.Duration, links ...string) *watch.Status {
	w.l.t.Helper()
	return w.waitProbes(since, n, timeout, "answered rounds", func(p watch.ProbeStats) uint64 { return p.Answered }, links)
}

func (w *Watch) waitProbes(since *watch.Status, n uint64, timeout time.Duration, what string, count func(watch.ProbeStats) uint64, links []string) *watch.Status {
	w.l.t.Helper()
	if since == nil {
		w.l.t.Fatalf("waiting for %d %s: no state file to count from", n, what)
	}
	if len(links) == 0 {
		for _, s := range since.Links {
			links = append(links, s.Iface+" "+string(s.Family))
		}
	}
	base := map[string]watch.LinkStatus{}
	for _, name := range links {
		iface, family, _ := strings.Cut(name, " ")
		s := since.Link(iface, stanza.Family(family))
		if s == nil {
			w.l.t.Fatalf("waiting for %d %s of %s: the monitor does not watch it: %+v", n, what, name, since)
		}
		base[name] = *s
	}
	// reached[name] is the round count of the state file in which name's
	// count first reached its goal; done once a later round is counted.
	reached := map[string]uint64{}
	start := time.Now()
	for {
		st := w.Status()
		done := st != nil
		progress := []string{}
		for _, name := range links {
			iface, family, _ := strings.Cut(name, " ")
			b := base[name]
			s := st.Link(iface, stanza.Family(family))
			if st != nil && (s == nil || !s.Up.Equal(b.Up)) {
				w.l.t.Fatalf("waiting for %d %s of %s: it is no longer watched, or was brought up again: %+v\nlog:\n%s", n, what, name, s, w.Log())
			}
			if s == nil {
				continue
			}
			got := count(s.Probes) - count(b.Probes)
			progress = append(progress, fmt.Sprintf("%s: %d of %d", name, got, n))
			r, ok := reached[name]
			if !ok && got >= n {
				r, ok = s.Probes.Rounds, true
				reached[name] = r
			}
			if !ok || s.Probes.Rounds <= r {
				done = false
			}
		}
		if done {
			return st
		}
		if time.Since(start) > timeout {
			w.l.t.Fatalf("the monitor did not judge %d %s of %s in %s (is its --metrics-interval short?): %s\nlog:\n%s",
				n, what, strings.Join(links, ", "), timeout, strings.Join(progress, "; "), w.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Notified returns the first transitions the notify hook recorded (as
// Transitions does), as many as the state file st counts, once the hook
// has recorded them all: the monitor runs notify.d after each transition,
// one executable at a time, so a transition is in the state file before
// the hook has written its line. It fails the test if they are not all
// recorded within timeout. It counts the transitions of the links st
// lists, so it serves a monitor that was not restarted, watching links
// that stayed up.
func (w *Watch) Notified(st *watch.Status, timeout time.Duration) []string {
	w.l.t.Helper()
	var want uint64
	for _, s := range st.Links {
		want += s.Probes.Transitions
	}
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		got := w.Transitions()
		if uint64(len(got)) >= want {
			return got[:want]
		}
		if time.Now().After(deadline) {
			w.l.t.Fatalf("the notify hook recorded %d transitions in %s, the state file counts %d: %q\nlog:\n%s", len(got), timeout, want, got, w.Log())
		}
	}
}
