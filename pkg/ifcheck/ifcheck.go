// Package ifcheck checks an interfaces file the way ifisp's hooks will
// check its stanzas, before any ifup, like `nginx -t`: `ifisp check`.
//
// Every `iface` stanza gets the environment ifupdown would give its
// if-pre-up.d hooks (package interfaces) and goes through stanza.Parse, the
// very validation the hooks run. Then come the conflicts between stanzas,
// which a hook sees only at run time and only against links that are up
// already:
//
//   - two interfaces with one isp-table for the same family (an ISP's inet
//     and inet6 stanzas, native or a 6rd tunnel, share a table; two ISPs
//     cannot);
//   - two interfaces whose main-table defaults of one family take the same
//     metric: isp-metric, or the default ifupdown adds for `gateway` (at
//     `metric`, 0 when not given), both as the kernel stores them (an IPv6
//     metric 0 is 1024, stanza.KernelMetric);
//   - a source that belongs to two ISPs: an address, snat-to or isp-source
//     prefix of one interface overlapping one of another's, whose `from`
//     rules would race;
//   - a snat-from range that overlaps such an ISP source, its own link's or
//     another's: those are public addresses that leave by their own link as
//     they are. snat-from ranges of different links may overlap, and
//     normally do: every WAN NATs the same LAN, each to its own address.
//
// A stanza with problems of its own is left out of the conflicts until
// they are fixed. Problems are reported at the line of the option
// concerned (the iface line for a missing option). What only the kernel can tell (a table
// another link holds now, a metric a route of someone else's takes) is
// checked with Options.Kernel only.
package ifcheck

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/connmark"
	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/interfaces"
	"github.com/ifisp/ifisp/pkg/nat"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Problem is one thing wrong, at its place.
type Problem struct {
	Pos interfaces.Pos
	// Text is what is wrong: `IFACE: OPTION "VALUE": ...` (stanza.Error's
	// layout) for a stanza's problem, ifupdown's own words for a line
	// ifupdown refuses.
	Text string
}

// String is the problem's line: "FILE:LINE: TEXT".
func (p Problem) String() string { return p.Pos.String() + ": " + p.Text }

// Link is one stanza that is ifisp's and valid.
type Link struct {
	Stanza *interfaces.Stanza
	Config *stanza.Config
}

// Report is what Check found.
type Report struct {
	File     *interfaces.File
	Links    []Link    // the valid ifisp stanzas, in file order
	Problems []Problem // in file order
	// Hints are advice that does not make the file wrong.
	Hints []Problem
}

// Options tunes Check.
type Options struct {
	// Root is the filesystem root the rt_tables files are read below ("/"
	// on a live system).
	Root string
	// Kernel, when set, runs the checks of a valid stanza that need the
	// kernel (policy.Check against the running system); a *stanza.Error
	// it returns is reported at its options' lines.
	Kernel func(c *stanza.Config) error
}

// Check reads the interfaces file at path with everything it sources and
// checks it. The error is for a file that cannot be read at all; every
// other problem is in the Report.
func Check(path string, opt Options) (*Report, error) {
	f, err := interfaces.Read(path)
	var syntax interfaces.Errors
	if err != nil && !errors.As(err, &syntax) {
		return nil, err
	}
	r := &Report{File: f}
	for _, e := range syntax {
		var se *interfaces.SyntaxError
		if errors.As(e, &se) {
			r.Problems = append(r.Problems, Problem{se.Pos, se.Msg + " (ifupdown refuses the whole file)"})
		} else {
			r.Problems = append(r.Problems, Problem{interfaces.Pos{File: path}, e.Error()})
		}
	}
	root := opt.Root
	if root == "" {
		root = "/"
	}
	for _, s := range f.Stanzas {
		c, err := stanza.Parse(s.Env("", "pre-up"), root)
		if errors.Is(err, stanza.ErrNotOptedIn) {
			continue
		}
		if err != nil {
			r.stanzaError(s, err)
			continue
		}
		r.Links = append(r.Links, Link{s, c})
	}
	r.conflicts()
	if opt.Kernel != nil {
		for _, l := range r.Links {
			if err := opt.Kernel(l.Config); err != nil {
				r.stanzaError(l.Stanza, err)
			}
		}
	}
	r.hints()
	r.sort()
	return r, nil
}

// stanzaError adds the problems of err, found in s.
func (r *Report) stanzaError(s *interfaces.Stanza, err error) {
	var se *stanza.Error
	if !errors.As(err, &se) {
		r.Problems = append(r.Problems, Problem{s.Pos, err.Error()})
		return
	}
	for _, p := range se.Problems {
		r.Problems = append(r.Problems, Problem{Line(s, p.Option), se.Line(p)})
	}
}

// add adds one problem of link l's option.
func (r *Report) add(l Link, option, value, format string, args ...any) {
	p := stanza.Problem{Option: option, Value: value, Msg: fmt.Sprintf(format, args...)}
	e := stanza.Error{Iface: l.Config.Iface}
	r.Problems = append(r.Problems, Problem{Line(l.Stanza, option), e.Line(p)})
}

// Line returns where option is written in s: its first line, found by the
// name ifupdown exports it as (so isp_table is isp-table), or the iface
// line for an option s does not have (a missing one) and for "iface".
func Line(s *interfaces.Stanza, option string) interfaces.Pos {
	want := interfaces.EnvName(option)
	for _, o := range s.Options {
		if interfaces.EnvName(o.Name) == want {
			return o.Pos
		}
	}
	return s.Pos
}

// where names a link's option for another link's message: "wana's
// isp-source 198.51.100.64/28 (FILE:LINE)".
func where(l Link, option, what string) string {
	return fmt.Sprintf("%s's %s %s (%s)", l.Config.Iface, option, what, Line(l.Stanza, option))
}

// conflicts finds the problems between stanzas.
func (r *Report) conflicts() {
	r.tables()
	r.metrics()
	r.sources()
	r.marks()
}

// marks reports two interfaces with one link id in the connection mark,
// and masks that differ. An ISP's inet and inet6 stanzas share their
// table, and so their id.
func (r *Report) marks() {
	var first *Link
	ids := map[uint32]Link{}
	for i, l := range r.Links {
		c := l.Config
		if c.Table == 0 || c.SixRD != nil {
			continue
		}
		if first == nil {
			first = &r.Links[i]
		} else if c.Mark.Mask != first.Config.Mark.Mask {
			r.add(l, "isp-mark-mask", connmark.Hex(c.Mark.Mask), "%s's marks are under %s (%s): give every ISP stanza the same isp-mark-mask",
				first.Config.Iface, connmark.Hex(first.Config.Mark.Mask), Line(first.Stanza, "isp-mark-mask"))
			continue
		}
		o, seen := ids[c.Mark.ID]
		if !seen {
			ids[c.Mark.ID] = l
			continue
		}
		if o.Config.Iface != c.Iface && o.Config.Table != c.Table { // a shared table is reported already
			r.add(l, "isp-mark", value(l, "isp-mark"), "link id %d is %s's too (%s): each ISP link needs its own isp-mark (it defaults to the table's number, folded into the mask's ids when larger)",
				c.Mark.ID, o.Config.Iface, Line(o.Stanza, "isp-mark"))
		}
	}
}

// tables reports a table that two interfaces use for one family.
func (r *Report) tables() {
	type key struct {
		f     stanza.Family
		table int
	}
	first := map[key]Link{}
	for _, l := range r.Links {
		c := l.Config
		if c.Table == 0 {
			continue
		}
		k := key{c.Family, c.Table}
		o, seen := first[k]
		if !seen {
			first[k] = l
			continue
		}
		if o.Config.Iface != c.Iface {
			r.add(l, "isp-table", c.TableName, "table %d's %s routes would be %s's too (%s): each ISP link needs a table of its own",
				c.Table, c.Family, o.Config.Iface, Line(o.Stanza, "isp-table"))
		}
	}
}

// mainDefault is one main-table default a stanza makes.
type mainDefault struct {
	l             Link
	option, value string
	metric        int // as the kernel stores it
	ifupdowns     bool
}

// defaults lists the main-table defaults of l: isp-metric's, and the one
// ifupdown adds for a static stanza's gateway.
func defaults(l Link) []mainDefault {
	c := l.Config
	var list []mainDefault
	if c.Metric >= 0 {
		list = append(list, mainDefault{l, "isp-metric", strconv.Itoa(c.Metric), stanza.KernelMetric(c.Family, c.Metric), false})
	}
	if c.Gateway.IsValid() {
		d := mainDefault{l, "gateway", c.Gateway.String(), stanza.KernelMetric(c.Family, max(c.GatewayMetric, 0)), true}
		if c.GatewayMetric >= 0 {
			d.option, d.value = "metric", strconv.Itoa(c.GatewayMetric)
		}
		list = append(list, d)
	}
	return list
}

// metrics reports two interfaces' main-table defaults of one family at
// one metric.
func (r *Report) metrics() {
	type key struct {
		f      stanza.Family
		metric int
	}
	first := map[key]mainDefault{}
	for _, l := range r.Links {
		for _, d := range defaults(l) {
			k := key{l.Config.Family, d.metric}
			o, seen := first[k]
			if !seen {
				first[k] = d
				continue
			}
			if o.l.Config.Iface == l.Config.Iface {
				continue
			}
			what := fmt.Sprintf("metric %d", d.metric)
			if o.ifupdowns {
				what = "gateway route at " + what
			} else {
				what = "isp-metric default at " + what
			}
			todo := "two defaults at one metric leave the choice of ISP to chance (give each ISP a metric of its own)"
			if d.ifupdowns && l.Config.Family == stanza.Inet {
				todo = "ifupdown cannot add the stanza's gateway route beside it at the same metric (give the stanza another metric)"
			}
			r.add(l, d.option, d.value, "%s has the main table's %s already (%s): %s",
				o.l.Config.Iface, what, Line(o.l.Stanza, o.option), todo)
		}
	}
}

// source is one prefix that belongs to an ISP link.
type source struct {
	l      Link
	option string
	p      netip.Prefix
}

// sources lists the sources that are l's own: its address, snat-to and
// isp-source.
func sources(l Link) []source {
	c := l.Config
	var list []source
	if c.Address.IsValid() {
		list = append(list, source{l, "address", netip.PrefixFrom(c.Address.Addr(), c.Address.Addr().BitLen())})
	}
	if c.SNATTo.IsValid() {
		list = append(list, source{l, "snat-to", netip.PrefixFrom(c.SNATTo, c.SNATTo.BitLen())})
	}
	for _, p := range c.Sources {
		list = append(list, source{l, "isp-source", p})
	}
	return list
}

// sources reports a source that two interfaces claim, and a snat-from
// range that covers an ISP's own source.
func (r *Report) sources() {
	var all []source
	for _, l := range r.Links {
		mine := sources(l)
		for _, s := range mine {
			for _, o := range all {
				if o.l.Config.Iface != l.Config.Iface && o.p.Overlaps(s.p) {
					r.add(l, s.option, value(l, s.option), "%s overlaps %s: a source belongs to one ISP only, or the `from` rules race (remove it from one of them)",
						s.p, where(o.l, o.option, o.p.String()))
					break
				}
			}
		}
		all = append(all, mine...)
	}
	for _, l := range r.Links {
	ranges:
		for _, p := range l.Config.SNATFrom {
			for _, s := range all {
				if s.p.Overlaps(p) {
					r.add(l, "snat-from", value(l, "snat-from"), "%s overlaps %s: that is an ISP's own address, which leaves by its link as it is (take it out of snat-from)",
						p, where(s.l, s.option, s.p.String()))
					continue ranges
				}
			}
		}
	}
}

// value returns option's value in l as the hooks get it.
func value(l Link, option string) string {
	for _, v := range l.Stanza.Variables(l.Config.Iface) {
		if interfaces.EnvName(v.Name) == interfaces.EnvName(option) {
			return v.Value
		}
	}
	return ""
}

// hints adds the advice docs/design.md promises: a stanza whose main-table
// default is ifupdown's own `gateway` route makes ifdown print
// "RTNETLINK answers: No such process", harmlessly.
func (r *Report) hints() {
	for _, l := range r.Links {
		c := l.Config
		if c.Gateway.IsValid() && c.Table != 0 {
			p := stanza.Problem{Option: "gateway", Value: c.Gateway.String(),
				Msg: "ifisp withdraws this default before ifupdown does, so ifdown prints \"RTNETLINK answers: No such process\" (harmless; isp-gateway with isp-metric avoids it)"}
			e := stanza.Error{Iface: c.Iface}
			r.Hints = append(r.Hints, Problem{Line(l.Stanza, "gateway"), e.Line(p)})
		}
	}
}

// sort puts the problems in the order of the files and lines.
func (r *Report) sort() {
	order := map[string]int{}
	if r.File != nil {
		for i, f := range r.File.Files {
			order[f] = i
		}
	}
	cmp := func(a, b Problem) int {
		if a.Pos.File != b.Pos.File {
			return order[a.Pos.File] - order[b.Pos.File]
		}
		return a.Pos.Line - b.Pos.Line
	}
	slices.SortStableFunc(r.Problems, cmp)
	slices.SortStableFunc(r.Hints, cmp)
}

// String is every problem, one line each, in order.
func (r *Report) String() string {
	var b strings.Builder
	for _, p := range r.Problems {
		b.WriteString(p.String() + "\n")
	}
	return b.String()
}

// KernelChecks returns an Options.Kernel that makes, on h's network
// namespace, the very checks the if-pre-up.d hook makes against the kernel
// (hook.Check: the isp-lan interface, the 6rd tunnel's name and 6rd-local,
// an isp-table whose routes of the family are another interface's now, a
// metric another main-table default holds now), and ifisp-snat's check of
// the marks, which it makes as it reads the tables for its chains.
func KernelChecks(h *netlink.Handle) func(*stanza.Config) error {
	return func(c *stanza.Config) error {
		if err := hook.Check(h, c); err != nil {
			return err
		}
		if c.SixRD != nil {
			return nil // no chains, no marks
		}
		b, err := nat.NewExec(c.Family)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Iface, err)
		}
		return nat.CheckMarks(b, c)
	}
}
