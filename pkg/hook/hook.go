// Package hook is the shared main() of ifisp's ifupdown hooks: it parses the
// stanza from the environment ifupdown exports, takes the run directory's
// lock, checks everything that can be checked before anything changes, runs
// the action for the phase, and reports every problem on its own line
// before exiting non-zero.
//
// In if-pre-up.d a hook runs every check of the stanza (hooks/layout puts
// only ifisp-snat there), so a bad stanza stops ifup before ifupdown has
// changed anything. So that the operator knows which part refused what, a
// problem with a stanza option is prefixed with the name of the hook that
// owns the option (stanza.Owner), whichever binary found it.
package hook

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/lan"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/rundir"
	"github.com/ifisp/ifisp/pkg/sixrdlink"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Action is what a hook does in one phase, holding the lock, with a netlink
// handle in the current network namespace.
type Action func(h *netlink.Handle, c *stanza.Config) error

// Step is a hook's work in one phase: its action, and the stanzas it has
// work for.
type Step struct {
	// For reports whether Do has anything to do for stanza c (nil: for
	// every stanza). It sees the stanza as parsed, before any lease fills
	// it in. For any other stanza the hook exits before it takes the lock,
	// reads a record or opens netlink: ifupdown runs every hook of a folder
	// for every stanza, and most have nothing to do for most.
	For func(c *stanza.Config) bool
	Do  Action
}

// Phases maps ifupdown's PHASE (pre-up, post-up, pre-down, post-down) to the
// hook's step there. A phase without one is a no-op, so one binary can be
// linked into several if-*.d folders.
type Phases map[string]Step

// For returns the action of phase for stanza c: nil when there is none.
func (p Phases) For(c *stanza.Config, phase string) Action {
	s := p[phase]
	if s.Do == nil || s.For != nil && !s.For(c) {
		return nil
	}
	return s.Do
}

// Main runs the hook named name and exits: 0 on success or when the stanza is
// not ifisp's, 1 with one line per problem otherwise, 2 for a bad command
// line.
func Main(name string, phases Phases) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	phase := fs.String("phase", "", "act as in this ifupdown `PHASE` (default: $PHASE), for running the hook by hand")
	timeout := fs.Duration("lock-timeout", rundir.DefaultLockTimeout, "wait at most this long for the lock other ifisp hooks and ifisp-watch hold")
	fs.SetOutput(io.Discard) // the errors are reported below, on one line
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fmt.Printf("usage: %s [--phase PHASE] [--lock-timeout DURATION]\n\nAn ifupdown hook: it reads the stanza from IFACE, ADDRFAM, METHOD, PHASE and IF_* as ifupdown exports them.\n\n", name)
			fs.PrintDefaults()
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "%s: %v (it takes --phase and --lock-timeout; see %s --help)\n", name, err, name)
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected argument %q (an ifupdown hook takes options only; see %s --help)\n", name, fs.Arg(0), name)
		os.Exit(2)
	}
	if err := Run(name, os.Environ(), "/", *phase, *timeout, phases); err != nil {
		report(os.Stderr, name, err)
		os.Exit(1)
	}
}

// Run parses the stanza in environ (rt_tables below root) and, holding the
// lock (waiting at most timeout), checks it against the kernel and runs the
// action for phase, or for the stanza's PHASE when phase is empty.
func Run(name string, environ []string, root, phase string, timeout time.Duration, phases Phases) error {
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
	act := phases.For(c, phase)
	if act == nil && phase != "pre-up" {
		return nil
	}
	lk, err := rundir.TakeLock(fmt.Sprintf("%s %s %s %s", name, c.Iface, c.Family, phase), timeout)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Iface, err)
	}
	defer lk.Release()
	// What a lease gave the link; going down needs none of it.
	if err := registry.Lease(c); err != nil && c.Mode != "stop" {
		return err
	}
	h, err := policy.NewHandle()
	if err != nil {
		return fmt.Errorf("%s: opening netlink: %w", c.Iface, err)
	}
	defer h.Close()
	if phase == "pre-up" {
		if err := Check(h, c); err != nil {
			return err
		}
	}
	if act == nil {
		return nil
	}
	return act(h, c)
}

// Check runs every check of the stanza that needs the kernel, and can be
// made before ifupdown configures the interface: the LAN interface of
// isp-lan (lan), and those of its routing (policy) or of its 6rd tunnel
// (sixrdlink).
func Check(h *netlink.Handle, c *stanza.Config) error {
	if err := lan.Check(h, c); err != nil {
		return err
	}
	if c.SixRD != nil {
		return sixrdlink.Check(h, c)
	}
	return policy.Check(h, c)
}

// report writes err one line per problem. A problem with a stanza option is
// prefixed with the hook that owns the option, anything else with the
// binary's own name, as ifupdown shows hook output to the operator.
func report(w io.Writer, name string, err error) {
	for _, e := range flatten(err) {
		var se *stanza.Error
		if errors.As(e, &se) {
			for _, p := range se.Problems {
				fmt.Fprintf(w, "%s: %s\n", stanza.Owner(p.Option), se.Line(p))
			}
			continue
		}
		for _, line := range strings.Split(e.Error(), "\n") {
			fmt.Fprintf(w, "%s: %s\n", name, line)
		}
	}
}

// flatten lists the errors errors.Join joined.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var list []error
		for _, e := range j.Unwrap() {
			list = append(list, flatten(e)...)
		}
		return list
	}
	return []error{err}
}
