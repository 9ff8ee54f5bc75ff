package nat

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/ifisp/ifisp/pkg/stanza"
)

// Backend reads and writes one family's iptables tables.
type Backend interface {
	// Save returns iptables-save's output, every table.
	Save() (string, error)
	// Restore applies payload, in iptables-restore's format, without
	// flushing what it does not name.
	Restore(payload string) error
}

// Exec is the Backend of the iptables-save and iptables-restore (or
// ip6tables-) that PATH finds: on Debian the links update-alternatives
// manages, so nf_tables or legacy, whichever the system uses.
type Exec struct {
	save, restore string
}

// NewExec returns the Backend for the family, or an error naming the
// command it could not find.
func NewExec(f stanza.Family) (*Exec, error) {
	prefix := "iptables"
	if f == stanza.Inet6 {
		prefix = "ip6tables"
	}
	e := &Exec{}
	for _, c := range []struct {
		path *string
		name string
	}{{&e.save, prefix + "-save"}, {&e.restore, prefix + "-restore"}} {
		p, err := exec.LookPath(c.name)
		if err != nil {
			return nil, fmt.Errorf("%s not found in PATH (install Debian's iptables package)", c.name)
		}
		*c.path = p
	}
	return e, nil
}

// xtablesWait is how long, in seconds, iptables-restore waits for the
// xtables lock another program (a firewall script, docker) holds.
const xtablesWait = "10"

// Save runs iptables-save.
func (e *Exec) Save() (string, error) {
	return run(exec.Command(e.save), "")
}

// Restore runs iptables-restore --noflush with payload on its input.
func (e *Exec) Restore(payload string) error {
	_, err := run(exec.Command(e.restore, "--noflush", "-w", xtablesWait), payload)
	return err
}

// run runs cmd with stdin, returning its output, or an error with what it
// said on stderr.
func run(cmd *exec.Cmd, stdin string) (string, error) {
	var out, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.Join(strings.Fields(stderr.String()), " ")
		var exit *exec.ExitError
		if errors.As(err, &exit) && msg != "" {
			return "", fmt.Errorf("%s: %s", cmd.Args[0], msg)
		}
		return "", fmt.Errorf("%s: %w %s", cmd.Args[0], err, msg)
	}
	return out.String(), nil
}
