// Package hook is the shared main() of ifisp's ifupdown hooks: it parses the
// stanza from the environment ifupdown exports, picks the action for the
// phase, and reports every problem on its own line, prefixed with the
// binary's name, before exiting non-zero.
package hook

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ifisp/ifisp/pkg/stanza"
)

// Action is what a hook does in one phase.
type Action func(c *stanza.Config) error

// Phases maps ifupdown's PHASE (pre-up, post-up, pre-down, post-down) to the
// hook's action there. A phase without an action is a no-op, so one binary
// can be linked into several if-*.d folders.
type Phases map[string]Action

// Main runs the hook named name and exits: 0 on success or when the stanza is
// not ifisp's, 1 with one line per problem otherwise.
func Main(name string, phases Phases) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	phase := fs.String("phase", "", "act as in this ifupdown `PHASE` (default: $PHASE), for running the hook by hand")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [--phase PHASE]\n\nAn ifupdown hook: it reads the stanza from IFACE, ADDRFAM, METHOD, PHASE and IF_* as ifupdown exports them.\n\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if err := Run(os.Environ(), "/", *phase, phases); err != nil {
		report(os.Stderr, name, err)
		os.Exit(1)
	}
}

// Run parses the stanza in environ (rt_tables below root) and runs the
// action for phase, or for the stanza's PHASE when phase is empty.
func Run(environ []string, root, phase string, phases Phases) error {
	c, err := stanza.Parse(environ, root)
	if errors.Is(err, stanza.ErrNotOptedIn) {
		return nil
	}
	if err != nil {
		return err
	}
	if phase == "" {
		phase = c.Phase
	}
	if act := phases[phase]; act != nil {
		return act(c)
	}
	return nil
}

// report writes err one line per problem, each prefixed with the binary's
// name, as ifupdown shows hook output to the operator.
func report(w io.Writer, name string, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(w, "%s: %s\n", name, line)
	}
}
