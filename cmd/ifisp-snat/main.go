// Binary ifisp-snat is the ifupdown hook that installs a WAN's SNAT rules
// (snat-from) and its egress guard, in ifisp's own iptables chains, each
// table in one iptables-restore transaction.
//
// Linked into if-pre-up.d it installs them before ifupdown adds the address
// and its gateway route, so no flow can leave the WAN un-NATed or spoofed in
// between; into if-up.d it installs them for `inet dhcp`, whose address is
// only known then; into if-post-down.d it removes them.
package main

import (
	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/linkhook"
)

func main() { hook.Main("ifisp-snat", linkhook.SNAT) }
