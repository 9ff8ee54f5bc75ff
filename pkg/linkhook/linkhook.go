// Package linkhook is what each of ifisp's ifupdown hooks does in each
// phase (Route, SNAT, Conntrack, SixRD), and Run, which runs a folder's
// hooks as ifupdown's run-parts would, in one process under a lock its
// caller holds: ifisp-lease brings a link whose lease changed through
// exactly the steps of ifup and ifdown.
package linkhook

import (
	"fmt"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/hooks"
	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// ByBinary is each hook binary's phases, by the name hooks/layout gives it.
var ByBinary = map[string]hook.Phases{
	"ifisp-6rd":       SixRD,
	"ifisp-route":     Route,
	"ifisp-snat":      SNAT,
	"ifisp-conntrack": Conntrack,
}

// phases maps ifupdown's folders to the PHASE it runs them in.
var phases = map[string]string{
	"if-pre-up.d": "pre-up", "if-up.d": "post-up", "if-down.d": "pre-down", "if-post-down.d": "post-down",
}

// Run runs, for the stanza c, the actions of the hooks hooks/layout puts in
// folder ("if-up.d", ...), in run-parts' order, as ifupdown would, and
// stops at the first that fails. The caller holds the run directory's
// lock.
func Run(h *netlink.Handle, c *stanza.Config, folder string) error {
	phase, ok := phases[folder]
	if !ok {
		return fmt.Errorf("linkhook: no such folder %q", folder)
	}
	layout, err := hooks.Layout()
	if err != nil {
		return err
	}
	var in []hooks.Hook
	for _, hk := range layout {
		if hk.Folder == folder {
			in = append(in, hk)
		}
	}
	slices.SortFunc(in, func(a, b hooks.Hook) int { return strings.Compare(a.Name, b.Name) })
	run := *c
	run.Phase = phase
	for _, hk := range in {
		if act := ByBinary[hk.Binary][phase]; act != nil {
			if err := act(h, &run); err != nil {
				return fmt.Errorf("%s (%s): %w", hk.Binary, phase, err)
			}
		}
	}
	return nil
}
