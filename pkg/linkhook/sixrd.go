package linkhook

import (
	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/sixrdlink"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// SixRD is ifisp-6rd's: a 6rd stanza's tunnel parameters, addresses and
// routing.
var SixRD = awaiting(hook.Phases{
	"post-up":   {For: is6rd, Do: sixrdlink.Up},
	"post-down": {For: is6rd, Do: sixrdlink.Down},
}, nil)

// is6rd reports whether c is a 6rd stanza (6rd-prefix).
func is6rd(c *stanza.Config) bool { return c.SixRD != nil }

// not6rd reports whether c is any stanza but a 6rd one.
func not6rd(c *stanza.Config) bool { return c.SixRD == nil }
