// Binary ifisp-6rd is the ifupdown hook for an `inet6 v4tunnel` stanza with
// 6rd options: in if-up.d it gives the sit tunnel ifupdown made its 6rd
// parameters, numbers the router (tunnel or 6rd-lan interface) from the
// delegated prefix, routes it through the ISP's table, and records the
// prefix and the address with the link's plan in the registry (ifisp-watch
// watches the link with isp-table and isp-check); in if-post-down.d it
// undoes all that (ifisp-route marks the link going down in if-down.d
// first).
//
// What the tunnel will need (the interfaces 6rd-lan and 6rd-local name, the
// ISP table) is checked before ifupdown changes anything by ifisp-snat, the
// only ifisp hook in if-pre-up.d, which runs every check of the stanza
// (package hook).
package main

import (
	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/linkhook"
)

func main() { hook.Main("ifisp-6rd", linkhook.SixRD) }
