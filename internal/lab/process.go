package lab

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// daemon is one run of a server the lab starts at an ISP (dnsmasq, dhcpd,
// pppoe-server).
type daemon struct {
	l      *Lab
	name   string // what messages call it
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has exited
}

// startDaemon starts args in namespace ns, its output to out, and waits
// until ready, polled, says it serves: the process exiting first, or not
// ready after timeout, fails the test with log(). name is what messages
// call it ("dnsmasq at ispb"), readiness what ready checks. The lab's
// removal kills it.
func (l *Lab) startDaemon(name, ns string, args []string, out io.Writer, readiness string, timeout time.Duration, ready func() bool, log func() string) *daemon {
	l.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	d := &daemon{l: l, name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait() // the one Wait of this process
		close(d.exited)
	}()
	l.t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.exited
	})
	for deadline := time.Now().Add(timeout); !ready(); time.Sleep(10 * time.Millisecond) {
		if !d.running() {
			l.t.Fatalf("%s exited: %v\n%s", name, cmd.ProcessState, log())
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s is not %s after %s:\n%s", name, readiness, timeout, log())
		}
	}
	return d
}

// running reports whether the process has not exited yet (false for no
// daemon).
func (d *daemon) running() bool {
	if d == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// stop sends the process sig, if it runs, and waits until it has
// exited: one that has not 5 s later is killed, and fails the test.
func (d *daemon) stop(sig syscall.Signal) {
	if !d.running() {
		return
	}
	d.l.t.Helper()
	d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		d.l.t.Fatalf("%s did not exit 5s after %s", d.name, unix.SignalName(sig))
	}
}

// processes returns the processes of namespace ns whose command name is
// one of names (zombies excluded: they have ended).
func (l *Lab) processes(ns string, names ...string) []int {
	out, err := l.Exec("", "ip", "netns", "pids", ns)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && running(pid, names...) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// running reports whether pid has not exited (a zombie has: it waits for
// its parent) and, given names, runs one of them.
func running(pid int, names ...string) bool {
	if len(names) > 0 {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || !slices.Contains(names, strings.TrimSpace(string(comm))) {
			return false
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// waitGone waits until none of pids runs any more; false after timeout.
func waitGone(pids []int, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if !slices.ContainsFunc(pids, func(p int) bool { return running(p) }) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
