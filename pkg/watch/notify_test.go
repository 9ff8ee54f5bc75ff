package watch

import (
	"bytes"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifyScript writes a notify executable that starts `sleep 60` in the
// background, holding the script's output open, records the sleep's pid,
// and then runs rest. It returns the script's path and a function reading
// the pid; cleanup kills that sleep whatever the test saw.
func notifyScript(t *testing.T, rest string) (path string, pid func() int) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "hold")
	pidFile := filepath.Join(dir, "pid")
	script := "#!/bin/sh\necho started\nsleep 60 &\necho $! >" + pidFile + "\n" + rest
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	pid = func() int {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatalf("the script recorded no pid: %v", err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("pid file: %v", err)
		}
		return n
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(n, syscall.SIGKILL)
			}
		}
	})
	return path, pid
}

// alive reports whether pid is a process that still runs (a zombie does
// not count: it has ended, only its parent has not reaped it yet).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces, the state follows the
	// last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestNotifyTimeoutKillsGroup: a notify script that outlives its limit,
// with a background child holding its output open, is killed with that
// child at the limit, and exec returns then, not when the child would
// have ended.
func TestNotifyTimeoutKillsGroup(t *testing.T) {
	path, pid := notifyScript(t, "sleep 60\n")
	var logged bytes.Buffer
	n := &notifier{log: log.New(&logged, "", 0), timeout: 300 * time.Millisecond}
	start := time.Now()
	n.exec(path, nil)
	took := time.Since(start)
	if limit := n.timeout + 2*time.Second; took > limit {
		t.Errorf("exec returned after %s, want within %s (the timeout plus slack)", took, limit)
	}
	// The group is killed with SIGKILL: the child dies at once, but give
	// the kernel a moment to finish it.
	child := pid()
	for deadline := time.Now().Add(2 * time.Second); alive(child) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(child) {
		t.Errorf("the script's background child %d still runs after the timeout", child)
	}
	if got := logged.String(); !strings.Contains(got, path+": killed") || !strings.Contains(got, "300ms") || !strings.Contains(got, "started") {
		t.Errorf("log %q: want the script, that it was killed, the limit and its output", got)
	}
}

// TestNotifyLeftChild: a notify script that ends at once but leaves a
// child holding its output open costs the notifier notifyWaitDelay, not
// the child's whole life.
func TestNotifyLeftChild(t *testing.T) {
	path, _ := notifyScript(t, "exit 0\n")
	var logged bytes.Buffer
	n := &notifier{log: log.New(&logged, "", 0), timeout: time.Minute}
	start := time.Now()
	n.exec(path, nil)
	if took, limit := time.Since(start), notifyWaitDelay+2*time.Second; took > limit {
		t.Errorf("exec returned after %s, want within %s", took, limit)
	}
	if got := logged.String(); !strings.Contains(got, path+": it ended, but a process it left running held its output open") {
		t.Errorf("log %q: want the script and why it took long", got)
	}
}
