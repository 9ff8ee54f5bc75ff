// Binary ifisp-conntrack is the ifupdown hook that reconciles conntrack
// after a route change, by connection mark (package reconcile): in
// if-down.d, after ifisp-route has withdrawn the link's default, it deletes
// the flows NATed to the link; last in if-up.d, when the link has taken the
// default, the flows NATed to the other links (but an isp-sticky link's),
// and for inet dhcp the flows that left the link before its SNAT rule was
// in. A static link that comes up as the backup costs no conntrack work at
// all.
//
// It acts for inet stanzas, and for inet6 ones with NPTv6 (snat-from): any
// other IPv6 flow's source is its host's own address, which no conntrack
// delete can move to another link.
package main

import (
	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/linkhook"
)

func main() { hook.Main("ifisp-conntrack", linkhook.Conntrack) }
