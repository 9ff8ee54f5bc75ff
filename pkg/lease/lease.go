package lease

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/linkhook"
	"github.com/ifisp/ifisp/pkg/nat"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/rundir"
	"github.com/ifisp/ifisp/pkg/sixrd"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Apply brings e's link to what e says, holding the run directory's lock
// (waiting at most timeout), and returns what it did, for the one log line
// the client's hook writes. A link that is not ifisp's, or whose ifup or
// ifdown is under way (its own hooks read the lease), is left alone.
func Apply(e Event, root string, timeout time.Duration) (string, error) {
	var did string
	err := rundir.Locked("ifisp-lease "+e.String(), timeout, func() error {
		h, err := policy.NewHandle()
		if err != nil {
			return fmt.Errorf("opening netlink: %w", err)
		}
		defer h.Close()
		switch e.Kind {
		case Bound:
			did, err = bound(h, e, root)
		case Lost:
			did, err = lost(h, e, root)
		default:
			did, err = delegated(h, e, root)
		}
		if err == nil {
			err = renew(e)
		}
		return err
	})
	return did, err
}

// renew records, with the link's record, when what e leases ends: a
// delegated prefix's lifetimes, an IPv4 lease's (for the 6rd prefixes
// numbered from its address). ifisp-watch's router advertisements never
// promise more. A client that gave none, or a link with no record, is
// left as it is.
func renew(e Event) error {
	if e.Valid == 0 || !(e.Kind == Delegated || e.Kind == Bound && e.Family == stanza.Inet) {
		return nil
	}
	rec, err := registry.Read(e.Iface, e.Family)
	if err != nil || rec == nil || e.Kind == Delegated && rec.Delegated != e.Prefix {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	rec.Expires = &registry.Lifetimes{Preferred: now.Add(e.Preferred), Valid: now.Add(e.Valid)}
	return registry.Write(rec)
}

// bound brings the link up on e's address and gateway: the hooks of
// if-up.d, as ifup runs them, move its plan to them, and the old
// address's rules, routes, SNAT rules and conntrack entries go. The 6rd
// stanzas whose 6rd-local is the link follow it (dependents), and a
// lease's option 212 is recorded for their `6rd-prefix dhcp`.
func bound(h *netlink.Handle, e Event, root string) (string, error) {
	rec, err := registry.Read(e.Iface, e.Family)
	if err != nil {
		return "", err
	}
	optChanged := e.Family == stanza.Inet && !sameOption(rec, e.SixRD)
	if optChanged {
		if rec == nil {
			rec = &registry.Link{Iface: e.Iface, Family: e.Family} // the link's ifup is under way
		}
		rec.Option6RD = e.SixRD
		if err := registry.Write(rec); err != nil {
			return "", err
		}
	}
	did, moved, err := boundLink(h, e, rec, root)
	if err != nil || !moved && !optChanged {
		return did, err
	}
	deps, err := dependents(h, e.Iface, root)
	if deps != "" {
		did += "; " + deps
	}
	return did, err
}

// boundLink is bound's for the link itself; moved says its plan moved.
func boundLink(h *netlink.Handle, e Event, rec *registry.Link, root string) (did string, moved bool, err error) {
	var env []string
	was := "down"
	switch {
	case rec != nil && rec.Complete():
		env, was = rec.Stanza, fmt.Sprintf("%s, gateway %s", rec.Address, rec.Gateway)
	case rec != nil && rec.Lost:
		env = rec.Stanza
	case rec == nil && e.Stanza != "":
		anchor, err := registry.Read(e.Stanza, e.Family)
		if err != nil {
			return "", false, err
		}
		if anchor == nil || !anchor.Lost {
			return fmt.Sprintf("no ifisp stanza %s is up: nothing to do (ifup %s first, or name the stanza with `ipparam` in the peers file)", e.Stanza, e.Stanza), false, nil
		}
		env = withIface(anchor.Stanza, e.Iface)
	case rec == nil || len(rec.Stanza) == 0:
		return "not an ifisp link, or its ifup has not reached if-up.d: nothing to do", false, nil
	default:
		return "its ifup or ifdown is under way, and its hooks read the lease themselves", false, nil
	}
	c, err := config(env, root, "post-up", e)
	if err != nil {
		return "", false, err
	}
	if !c.ISPGateway.IsValid() {
		c.ISPGateway = e.Gateway
	}
	if rec != nil && rec.Complete() && rec.Address == e.Address && (rec.Gateway == c.ISPGateway || !e.Gateway.IsValid()) {
		return fmt.Sprintf("unchanged (%s, gateway %s)", e.Address, none(c.ISPGateway)), false, nil
	}
	if rec != nil && rec.Lost && c.WaitsForRA() {
		// ifisp-watch brings it up when the default comes, on whatever
		// address the kernel has then.
		return fmt.Sprintf("%s; the link waits for its router advertisement", e.Address), false, nil
	}
	if err := hook.Check(h, c); err != nil {
		return "", false, err
	}
	// The link's SNAT rules and guard first, as ifup puts them in
	// if-pre-up.d: if-up.d's ifisp-route adds the main-table default
	// (isp-metric) before its ifisp-snat, and a PPP session has no chains
	// at all until then, so new LAN flows would leave by it un-NATed and
	// flows NATed to another link would leave by it with that link's
	// address.
	if err := linkhook.Run(h, c, "if-pre-up.d"); err != nil {
		return "", false, err
	}
	if err := linkhook.Run(h, c, "if-up.d"); err != nil {
		return "", false, err
	}
	return fmt.Sprintf("up on %s, gateway %s (was %s)", e.Address, none(c.ISPGateway), was), true, nil
}

// sameOption says whether the record already holds option 212 o.
func sameOption(rec *registry.Link, o *sixrd.Option) bool {
	var had *sixrd.Option
	if rec != nil {
		had = rec.Option6RD
	}
	return had == nil && o == nil || had != nil && o != nil && *had == *o
}

// dependents brings up again, through if-up.d, the 6rd stanzas whose
// 6rd-local is iface, up or waiting for iface's lease: their tunnel's
// local address, delegated prefix, LAN address, rules and router
// advertisements follow iface's new address (and option 212).
func dependents(h *netlink.Handle, iface, root string) (string, error) {
	all, err := registry.All()
	if err != nil {
		return "", err
	}
	var did []string
	var errs []error
	for _, r := range all {
		if r.Family != stanza.Inet6 || !(r.Complete() || r.Lost) || r.StanzaValue("IF_6RD_LOCAL") != iface {
			continue
		}
		c, err := config(r.Stanza, root, "post-up", Event{Iface: r.Iface})
		if err == nil {
			err = linkhook.Run(h, c, "if-up.d")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s, whose 6rd-local is %s: %w", r.Iface, iface, err))
			continue
		}
		did = append(did, r.Iface+" follows it")
	}
	return strings.Join(did, ", "), errors.Join(errs...)
}

// delegated records the prefix e delegates (or takes back) with the link,
// and when the link is up, brings it to the new prefix through if-up.d:
// its `from` rule, its LAN address and throw route, and the router
// advertisements (the old prefix announced deprecated). A link whose
// ifup has not reached if-up.d finds the prefix in its record there.
func delegated(h *netlink.Handle, e Event, root string) (string, error) {
	rec, err := registry.Read(e.Iface, e.Family)
	if err != nil {
		return "", err
	}
	if rec == nil {
		if e.Kind == Undelegated {
			return "no prefix recorded: nothing to do", nil
		}
		return fmt.Sprintf("recorded %s for the link's ifup", e.Prefix), registry.Write(&registry.Link{Iface: e.Iface, Family: e.Family, Delegated: e.Prefix})
	}
	was := rec.Delegated
	now := e.Prefix
	if e.Kind == Undelegated {
		if was != e.Prefix {
			return fmt.Sprintf("%s is not the link's prefix (%s): nothing to do", e.Prefix, none(was)), nil
		}
		now = netip.Prefix{}
	}
	if was == now {
		return fmt.Sprintf("unchanged (%s)", none(now)), nil
	}
	rec.Delegated = now
	if err := registry.Write(rec); err != nil {
		return "", err
	}
	if !rec.Complete() {
		return fmt.Sprintf("recorded %s (was %s); the link is not up", none(now), none(was)), nil
	}
	c, err := config(rec.Stanza, root, "post-up", e)
	if err != nil {
		return "", err
	}
	if !c.Delegation {
		return "the stanza asks for no prefix (request_prefix 1): nothing to do", nil
	}
	if err := linkhook.Run(h, c, "if-up.d"); err != nil {
		return "", err
	}
	return fmt.Sprintf("the link's prefix is %s (was %s)", none(now), none(was)), nil
}

// lost takes the link down as ifdown would, by the hooks of if-down.d and
// if-post-down.d; a DHCP link's record stays, Lost, for the next lease.
func lost(h *netlink.Handle, e Event, root string) (string, error) {
	rec, err := registry.Read(e.Iface, e.Family)
	if err != nil {
		return "", err
	}
	if rec == nil || !rec.Complete() {
		return "not up (or its ifdown is under way): nothing to do", nil
	}
	if e.Address.IsValid() && rec.Address != e.Address {
		return fmt.Sprintf("the link is on %s now, not on the ended session's %s: nothing to do", rec.Address, e.Address), nil
	}
	// A PPP session's stanza stays recorded as its anchor (package
	// linkhook); a DHCP link keeps its record, Lost.
	if err := takeDown(h, rec, root, e, e.Stanza == ""); err != nil {
		return "", err
	}
	did := fmt.Sprintf("down, its lease is gone (it was on %s)", rec.Address)
	// The 6rd tunnels over it have no IPv4 address to number from.
	all, err := registry.All()
	if err != nil {
		return did, err
	}
	var errs []error
	for _, r := range all {
		if r.Family == stanza.Inet6 && r.Complete() && r.StanzaValue("IF_6RD_LOCAL") == e.Iface {
			errs = append(errs, takeDown(h, &r, root, Event{Iface: r.Iface}, true))
			did += "; " + r.Iface + " down with it"
		}
	}
	return did, errors.Join(errs...)
}

// takeDown runs rec's if-down.d and if-post-down.d steps, as ifdown
// would; with keep, its record stays, Lost, for the lease that brings it
// back.
func takeDown(h *netlink.Handle, rec *registry.Link, root string, e Event, keep bool) error {
	c, err := config(rec.Stanza, root, "pre-down", e)
	if err != nil {
		return err
	}
	err = errors.Join(linkhook.Run(h, c, "if-down.d"), linkhook.Run(h, c, "if-post-down.d"))
	if !keep {
		return err
	}
	lost := &registry.Link{Iface: rec.Iface, Family: rec.Family, Stanza: rec.Stanza, Lost: true}
	if rec.Chains != nil {
		// dhclient-script puts the next lease's address and default
		// route in before it runs this hook: until the link is up on
		// them, nothing may leave by it.
		closed := (&nat.Link{Config: c}).Closed()
		b, berr := nat.NewExec(c.Family)
		if berr == nil {
			berr = nat.Apply(b, closed)
		}
		err = errors.Join(err, berr)
		lost.Chains = &closed
	}
	return errors.Join(err, registry.Write(lost))
}

// config parses the recorded stanza env as ifupdown would export it in
// phase, with what the records know of its lease.
func config(env []string, root, phase string, e Event) (*stanza.Config, error) {
	if len(env) == 0 {
		return nil, fmt.Errorf("%s: the link's record has no stanza (an older ifisp wrote it): ifdown and ifup it once", e.Iface)
	}
	c, err := registry.Config(env, root, phase)
	if err != nil {
		return nil, err
	}
	c.Session = e.Stanza != ""
	if err := registry.Lease(c); err != nil && c.Mode != "stop" {
		return nil, err
	}
	return c, nil
}

// withIface is a PPP stanza's env with IFACE the session's interface.
func withIface(env []string, iface string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if strings.HasPrefix(kv, "IFACE=") {
			kv = "IFACE=" + iface
		}
		out = append(out, kv)
	}
	return out
}

// none writes an address or prefix for a log line, "none" for the zero one.
func none[T interface {
	IsValid() bool
	String() string
}](v T) string {
	if !v.IsValid() {
		return "none"
	}
	return v.String()
}
