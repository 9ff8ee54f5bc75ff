// Binary ifisp-route is the ifupdown hook that installs an ISP's source
// routing: its table, its `from` rules and its optional main-table default.
//
// Linked into if-pre-up.d it checks the stanza against the kernel (the
// table is no other link's, the metric is free) before ifupdown changes
// anything; into if-up.d it installs the routing; into if-down.d it
// withdraws the main-table defaults through the link before ifupdown
// deconfigures it; into if-post-down.d it removes the rules and the table
// once the address is gone.
//
// It also keeps ifisp-watch's registry: a link is recorded, with the
// main-table defaults ifup left, once its routes are in, and forgotten
// before its defaults are withdrawn. Both happen under the run directory's
// lock (package hook takes it), so the monitor never acts on a link halfway
// through ifup or ifdown.
package main

import (
	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/linkhook"
)

func main() { hook.Main("ifisp-route", linkhook.Route) }
