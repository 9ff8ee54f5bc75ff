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

// Repairs is the number of pieces of the links' plans the monitor has put
// back, all links together, as its state file says now.
func (w *Watch) Repairs() int { return repairs(w.Status()) }

// repairs is the pieces put back, all links together, as s says.
func repairs(s *watch.Status) int {
	n := 0
	if s != nil {
		for _, l := range s.Links {
			n += l.Repairs
		}
	}
	return n
}

// WaitRepaired polls the state file until the monitor has repaired more
// than after pieces, and returns when it wrote that (the end of the
// repair), or fails the test after timeout. The count and the time come
// from one read: a file read twice may be two files.
func (w *Watch) WaitRepaired(after int, timeout time.Duration) time.Time {
	w.l.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		if s := w.Status(); repairs(s) > after {
			return s.Written
		}
		if time.Now().After(deadline) {
			w.l.t.Fatalf("ifisp-watch repaired nothing in %s (repairs %d)\nlog:\n%s", timeout, w.Repairs(), w.Log())
		}
	}
}
