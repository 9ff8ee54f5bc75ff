package linkhook

import (
	"errors"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// awaiting returns phases for a stanza whose link comes later
// (stanza.Config.AwaitsSession: `inet ppp`): such a stanza gets anchor's
// step for the phase, or none, and any other stanza the normal one. The
// step is looked up when it runs: sessionAnchor gets one in init.
func awaiting(normal, anchor hook.Phases) hook.Phases {
	pick := func(c *stanza.Config) hook.Phases {
		if c.AwaitsSession() {
			return anchor
		}
		return normal
	}
	p := hook.Phases{}
	for _, phase := range []string{"pre-up", "post-up", "pre-down", "post-down"} {
		if normal[phase].Do == nil && anchor[phase].Do == nil {
			continue
		}
		p[phase] = hook.Step{
			For: func(c *stanza.Config) bool { return pick(c).For(c, phase) != nil },
			Do:  func(h *netlink.Handle, c *stanza.Config) error { return pick(c)[phase].Do(h, c) },
		}
	}
	return p
}

// sessionAnchor is ifisp-route's for an `inet ppp` stanza: ifup records
// the stanza (Lost, until pppd's ip-up brings the session's link up
// through ifisp-lease), ifdown takes the session's link down first, then
// forgets the stanza.
var sessionAnchor = hook.Phases{
	"post-up": {Do: func(_ *netlink.Handle, c *stanza.Config) error {
		return registry.Write(&registry.Link{Iface: c.Iface, Family: c.Family, Stanza: c.Env, Lost: true})
	}},
	"post-down": {Do: func(_ *netlink.Handle, c *stanza.Config) error {
		return registry.Forget(c.Iface, c.Family)
	}},
}

// endSessions is sessionAnchor's pre-down. It runs Run, which reads
// ByBinary, so no variable's initializer may name it.
func init() { sessionAnchor["pre-down"] = hook.Step{Do: endSessions} }

// endSessions takes the PPP session links of stanza c down.
func endSessions(h *netlink.Handle, c *stanza.Config) error {
	sessions, err := registry.All()
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range sessions {
		if s.Family != c.Family || s.Iface == c.Iface || !s.Complete() || s.StanzaValue("LOGICAL") != c.Logical {
			continue
		}
		sc, err := registry.Config(s.Stanza, "/", "pre-down")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sc.Session = true
		errs = append(errs, Run(h, sc, "if-down.d"), Run(h, sc, "if-post-down.d"))
	}
	return errors.Join(errs...)
}
