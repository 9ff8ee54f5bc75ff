// Binary ifisp-6rd is the ifupdown hook for an `inet6 v4tunnel` stanza with
// 6rd options: in if-up.d it gives the sit tunnel ifupdown made its 6rd
// parameters, numbers the router (tunnel or 6rd-lan interface) from the
// delegated prefix, routes it through the ISP's table and publishes the
// prefix in /run/ifisp/6rd.IFACE; in if-post-down.d it undoes all that.
package main

import (
	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/sixrdlink"
	"github.com/ifisp/ifisp/pkg/stanza"
)

func main() {
	hook.Main("ifisp-6rd", hook.Phases{
		"post-up":   do(sixrdlink.Up),
		"post-down": do(sixrdlink.Down),
	})
}

// do runs f for 6rd stanzas, in the current network namespace.
func do(f func(*netlink.Handle, *stanza.Config) error) hook.Action {
	return func(c *stanza.Config) error {
		if c.SixRD == nil {
			return nil
		}
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		return f(h, c)
	}
}
