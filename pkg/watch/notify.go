package watch

import (
	"context"
	"errors"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ifisp/ifisp/pkg/rundir"
)

// notifyTimeout bounds one notify executable; when it runs out, the
// executable's whole process group is killed.
const notifyTimeout = 10 * time.Second

// notifyWaitDelay bounds how long the output pipe of a notify executable
// that has ended, or been killed, is read for: a child that it left running
// in the background may hold the pipe open for ever.
const notifyWaitDelay = time.Second

// runPartsName is what run-parts would run: notify.d follows its rules, so
// that editor backups (foo~, foo.bak) are not run.
var runPartsName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// notifier runs the notify executables of each transition, in order, one
// transition after another, away from the decision loop: a slow script
// must not delay the next failover.
type notifier struct {
	dir     string
	log     *log.Logger
	timeout time.Duration // for one executable: notifyTimeout
	queue   chan []string
	done    chan struct{}
}

func newNotifier(dir string, logger *log.Logger) *notifier {
	n := &notifier{dir: dir, log: logger, timeout: notifyTimeout, queue: make(chan []string, 64), done: make(chan struct{})}
	go n.run()
	return n
}

// send queues the transition of l from old to its current state. The facts
// travel as environment variables, never through a shell.
func (n *notifier) send(l *link, old State, at time.Time) {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		rundir.Env + "=" + rundir.Dir(),
		"IFISP_IFACE=" + l.reg.Iface,
		"IFISP_FAMILY=" + string(l.reg.Family),
		"IFISP_TABLE=" + strconv.Itoa(l.reg.Table),
		"IFISP_ADDRESS=" + l.reg.Address.String(),
		"IFISP_GATEWAY=" + l.reg.Gateway.String(),
		"IFISP_OLD_STATE=" + string(old),
		"IFISP_STATE=" + string(l.health.state),
		"IFISP_WITHDRAWN=" + strconv.FormatBool(l.withdrawn),
		"IFISP_REASON=" + l.reason,
		"IFISP_TIME=" + at.Format(time.RFC3339Nano),
	}
	select {
	case n.queue <- env:
	default:
		n.log.Printf("notify: %d transitions queued already, not running %s for %s %s", cap(n.queue), n.dir, l.reg.Iface, l.reg.Family)
	}
}

func (n *notifier) run() {
	defer close(n.done)
	for env := range n.queue {
		entries, err := os.ReadDir(n.dir)
		if err != nil {
			continue // no notify.d: nothing to run
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil || !runPartsName.MatchString(e.Name()) || !info.Mode().IsRegular() || info.Mode()&0o111 == 0 {
				continue
			}
			n.exec(filepath.Join(n.dir, e.Name()), env)
		}
	}
}

// exec runs one notify executable, in a process group of its own, and
// logs its output when it fails. It returns within n.timeout plus
// notifyWaitDelay whatever the executable does: at the timeout the whole
// group is killed (the children a script started in the background too),
// and the output pipe is closed notifyWaitDelay after the executable ended
// even if a child of it still holds it open.
func (n *notifier) exec(path string, env []string) {
	ctx, cancel := context.WithTimeout(context.Background(), n.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = notifyWaitDelay
	out, err := cmd.CombinedOutput()
	killed := false
	if cmd.ProcessState != nil {
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		killed = ctx.Err() != nil && ws.Signaled()
	}
	switch {
	case err == nil:
	case killed:
		n.log.Printf("notify: %s: killed, with its process group, after the limit of %s for a notify executable (make it finish sooner, or start long work detached): %s",
			path, n.timeout, strings.TrimSpace(string(out)))
	case errors.Is(err, exec.ErrWaitDelay):
		n.log.Printf("notify: %s: it ended, but a process it left running held its output open for more than %s (redirect the output of background commands): %s",
			path, notifyWaitDelay, strings.TrimSpace(string(out)))
	default:
		n.log.Printf("notify: %s: %v: %s", path, err, strings.TrimSpace(string(out)))
	}
}

// close waits for the queued notifications to run.
func (n *notifier) close() {
	close(n.queue)
	<-n.done
}
