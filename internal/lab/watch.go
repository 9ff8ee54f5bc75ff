package lab

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ifisp/ifisp/pkg/rundir"
	"github.com/ifisp/ifisp/pkg/stanza"
	"github.com/ifisp/ifisp/pkg/watch"
)

// Checked adds, to every ifisp stanza of interfaces (those with isp-table),
// an isp-check of the internet host of the stanza's family and the extra
// option lines: the health monitor's targets.
func Checked(interfaces string, extra ...string) string {
	return afterTable(interfaces, func(inet6 bool, _ string) []string {
		target := Internet
		if inet6 {
			target = Internet6
		}
		return append([]string{"isp-check " + target}, extra...)
	})
}

// afterTable adds, after the isp-table line of every stanza of interfaces,
// the option lines that lines returns for its family and table.
func afterTable(interfaces string, lines func(inet6 bool, table string) []string) string {
	var b strings.Builder
	inet6 := false
	for _, line := range strings.SplitAfter(interfaces, "\n") {
		b.WriteString(line)
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "iface" {
			inet6 = f[2] == "inet6"
		}
		if len(f) == 2 && f[0] == "isp-table" {
			for _, o := range lines(inet6, f[1]) {
				b.WriteString("\t" + o + "\n")
			}
		}
	}
	return b.String()
}

// Watch is ifisp-watch running in the lab's router.
type Watch struct {
	l   *Lab
	cmd *exec.Cmd
	out *syncBuffer
	// NotifyDir is where the monitor looks for notify executables.
	NotifyDir string
}

// StartWatch starts ifisp-watch from binDir in the router namespace, with
// the lab's run directory and the extra arguments args; the lab's removal
// kills it if the test did not stop it.
func (l *Lab) StartWatch(binDir string, args ...string) *Watch {
	l.t.Helper()
	w := &Watch{l: l, out: &syncBuffer{}, NotifyDir: filepath.Join(l.RunDir, "notify.d")}
	w.cmd = exec.Command("ip", append([]string{"netns", "exec", l.Router, "env", rundir.Env + "=" + l.RunDir,
		filepath.Join(binDir, "ifisp-watch"), "--notify-dir", w.NotifyDir}, args...)...)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	// A notify hook that records every transition: tests count them there,
	// and so test notify.d itself.
	l.WriteScript(filepath.Join(w.NotifyDir, "lab-record"), "#!/bin/sh\n"+
		"echo \"$IFISP_IFACE $IFISP_FAMILY $IFISP_OLD_STATE $IFISP_STATE withdrawn=$IFISP_WITHDRAWN table=$IFISP_TABLE\" >>\"$IFISP_RUN_DIR/transitions\"\n")
	l.start(w.cmd)
	// Started means the first state file is written.
	for deadline := time.Now().Add(10 * time.Second); w.Status() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			l.t.Fatalf("ifisp-watch wrote no state in 10s:\n%s", w.Log())
		}
	}
	return w
}

// Pid is the monitor's process id.
func (w *Watch) Pid() int { return w.cmd.Process.Pid }

// Transitions returns the transitions the notify hook recorded so far, one
// "IFACE FAMILY OLD NEW withdrawn=BOOL table=N" line each, oldest first.
func (w *Watch) Transitions() []string {
	b, _ := os.ReadFile(filepath.Join(w.l.RunDir, "transitions"))
	if s := strings.TrimSpace(string(b)); s != "" {
		return strings.Split(s, "\n")
	}
	return nil
}

// Log returns what the monitor printed so far.
func (w *Watch) Log() string { return w.out.String() }

// Stop stops the monitor as systemd does (SIGTERM) and waits for it.
func (w *Watch) Stop() error {
	w.cmd.Process.Signal(syscall.SIGTERM)
	return w.wait()
}

// Kill kills the monitor with SIGKILL, as a crash would, and waits for it.
func (w *Watch) Kill() {
	w.cmd.Process.Kill()
	w.wait()
}

// Reload sends SIGHUP.
func (w *Watch) Reload() { w.cmd.Process.Signal(syscall.SIGHUP) }

func (w *Watch) wait() error {
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		w.cmd.Process.Kill()
		return fmt.Errorf("ifisp-watch did not stop within 10s:\n%s", w.Log())
	}
}

// Status reads the monitor's state file, nil when there is none.
func (w *Watch) Status() *watch.Status {
	b, err := os.ReadFile(filepath.Join(w.l.RunDir, watch.StatusFile))
	if err != nil {
		return nil
	}
	var s watch.Status
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	return &s
}

// Link returns the monitor's view of iface and family, or nil.
func (w *Watch) Link(iface, family string) *watch.LinkStatus {
	return w.Status().Link(iface, stanza.Family(family))
}

// WaitFor polls the state file until iface/family is in state with the
// given withdrawn-ness, or fails the test after timeout; it returns how
// long that took.
func (w *Watch) WaitFor(iface, family string, state watch.State, withdrawn bool, timeout time.Duration) time.Duration {
	w.l.t.Helper()
	start := time.Now()
	for {
		if s := w.Link(iface, family); s != nil && s.State == state && s.Withdrawn == withdrawn {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			w.l.t.Fatalf("%s %s not %s (withdrawn %v) after %s: %+v\nlog:\n%s", iface, family, state, withdrawn, timeout, w.Link(iface, family), w.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitGone polls the state file until the monitor no longer watches
// iface/family, or fails the test after timeout; it returns how long that
// took.
func (w *Watch) WaitGone(iface, family string, timeout time.Duration) time.Duration {
	w.l.t.Helper()
	start := time.Now()
	for {
		st := w.Status()
		s := st.Link(iface, stanza.Family(family))
		if st != nil && s == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			w.l.t.Fatalf("%s %s still watched after %s: %+v\nlog:\n%s", iface, family, timeout, s, w.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Upstream makes the ISP lose the given share of the packets it forwards
// between the router and the internet, for one family (4 or 6), in both
// directions, with an iptables statistic rule in its namespace: 1 is a dead
// upstream behind a modem that keeps carrier, 0 heals it.
func (l *Lab) Upstream(isp *ISP, family int, loss float64) {
	l.t.Helper()
	cmd := "iptables"
	if family == 6 {
		cmd = "ip6tables"
	}
	if _, err := l.Exec(isp.NS, cmd, "-w", "-S", "upstream"); err != nil {
		l.Must(isp.NS, cmd, "-w", "-N", "upstream")
		l.Must(isp.NS, cmd, "-w", "-I", "FORWARD", "-j", "upstream")
	}
	l.Must(isp.NS, cmd, "-w", "-F", "upstream")
	switch {
	case loss >= 1:
		l.Must(isp.NS, cmd, "-w", "-A", "upstream", "-j", "DROP")
	case loss > 0:
		l.Must(isp.NS, cmd, "-w", "-A", "upstream", "-m", "statistic", "--mode", "random", "--probability", fmt.Sprint(loss), "-j", "DROP")
	}
}

// Carrier takes the ISP's side of the router's WAN cable down or up: the
// router's interface loses or regains carrier, and no ifdown runs.
func (l *Lab) Carrier(isp *ISP, up bool) {
	l.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	// The ISP's IPv6 addresses would go with the link: keep them, as a
	// modem's own would stay configured.
	l.sysctls(isp.NS, "net.ipv6.conf.cpe.keep_addr_on_down=1")
	l.Must(isp.NS, "ip", "link", "set", "cpe", state)
}

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

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
