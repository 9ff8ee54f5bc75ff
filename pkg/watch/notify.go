package watch

import (
	"context"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ifisp/ifisp/pkg/rundir"
)

// notifyTimeout bounds one notify executable.
const notifyTimeout = 10 * time.Second

// runPartsName is what run-parts would run: notify.d follows its rules, so
// that editor backups (foo~, foo.bak) are not run.
var runPartsName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// notifier runs the notify executables of each transition, in order, one
// transition after another, away from the decision loop: a slow script
// must not delay the next failover.
type notifier struct {
	dir   string
	log   *log.Logger
	queue chan []string
	done  chan struct{}
}

func newNotifier(dir string, logger *log.Logger) *notifier {
	n := &notifier{dir: dir, log: logger, queue: make(chan []string, 64), done: make(chan struct{})}
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

// exec runs one notify executable and logs its output when it fails.
func (n *notifier) exec(path string, env []string) {
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		n.log.Printf("notify: %s: %v: %s", path, err, strings.TrimSpace(string(out)))
	}
}

// close waits for the queued notifications to run.
func (n *notifier) close() {
	close(n.queue)
	<-n.done
}
