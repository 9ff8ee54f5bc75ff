// Package linkhook is what each of ifisp's ifupdown hooks does in each
// phase (Route, SNAT, Conntrack, SixRD), and Run, which runs a folder's
// hooks as ifupdown's run-parts would, in one process under a lock its
// caller holds: ifisp-lease brings a link whose lease changed through
// exactly the steps of ifup and ifdown.
package linkhook

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/hooks"
	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/registry"
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
		if act := ByBinary[hk.Binary].For(&run, phase); act != nil {
			if err := act(h, &run); err != nil {
				return fmt.Errorf("%s (%s): %w", hk.Binary, phase, err)
			}
		}
	}
	return nil
}

// Awake brings up the links that wait for their default (an `inet6 dhcp`
// stanza's ifup found no router advertisement yet; stanza.Config.WaitsForRA)
// and have one now, as their ifup would have, and moves the plans of the
// up links whose own address the kernel chose (registry.Link.FollowsAddress:
// SLAAC, which runs no hook) when that address is gone or deprecated and
// another is there. It returns what it did, one line per link. The caller
// holds the lock.
func Awake(h *netlink.Handle) ([]string, error) {
	all, err := registry.All()
	if err != nil {
		return nil, err
	}
	var did []string
	var errs []error
	for _, r := range all {
		waits, follows := r.Lost, r.Complete() && r.FollowsAddress()
		if !waits && !follows || len(r.Stanza) == 0 {
			continue
		}
		c, err := registry.Config(r.Stanza, "/", "post-up")
		if err != nil || waits && !c.WaitsForRA() {
			continue // a lost lease or PPP session waits for its client
		}
		if err := registry.Lease(c); err != nil {
			errs = append(errs, err)
			continue
		}
		l, err := policy.Resolve(h, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var why string
		switch {
		case waits && l.Gateway.IsValid():
			why = fmt.Sprintf("up, its router advertisement came (default via %s)", l.Gateway)
		case follows && l.Address.IsValid() && l.Address != r.Address && !usable(h, l.Index, r):
			why = fmt.Sprintf("its address %s is gone or deprecated: moved to %s", r.Address, l.Address)
		default:
			continue
		}
		if err := Run(h, c, "if-up.d"); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %s: %w", c.Iface, c.Family, why, err))
			continue
		}
		did = append(did, fmt.Sprintf("%s %s: %s", c.Iface, c.Family, why))
	}
	return did, errors.Join(errs...)
}

// usable says whether r's own address is on its interface (index), usable
// (policy.Usable).
func usable(h *netlink.Handle, index int, r registry.Link) bool {
	nl, err := h.LinkByIndex(index)
	if err != nil {
		return false
	}
	addrs, err := policy.Retry(func() ([]netlink.Addr, error) { return h.AddrList(nl, policy.NetlinkFamily(r.Family)) })
	if err != nil {
		return true // not known to be gone: leave the link as it is
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == r.Address {
			return policy.Usable(a)
		}
	}
	return false
}
