package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// timeFormat is how the text form writes times, in local time.
const timeFormat = "2006-01-02 15:04:05"

// Write writes s for a person: the monitor, then one block per link.
func Write(w io.Writer, s *Status) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	switch m := s.Monitor; {
	case m == nil:
		fmt.Fprintf(tw, "ifisp-watch: not running (no state file in %s)\n", s.RunDir)
	case m.Running:
		fmt.Fprintf(tw, "ifisp-watch: running (pid %d)\n", m.PID)
	default:
		fmt.Fprintf(tw, "ifisp-watch: not running (pid %d, which left %s/watch.json, is gone)\n", m.PID, s.RunDir)
	}
	if len(s.Links) == 0 {
		fmt.Fprintf(tw, "\nno ISP link is up (%s/links is empty)\n", s.RunDir)
	}
	for _, wl := range s.Waiting {
		fmt.Fprintf(tw, "\n%s %s: down, waiting for %s\n", wl.Iface, wl.Family, wl.For)
	}
	for _, l := range s.Links {
		fmt.Fprintf(tw, "\n%s %s: table %s, %s via %s, ifup at %s\n", l.Iface, l.Family, table(l), l.Address, l.Gateway, l.Registered.Local().Format(timeFormat))
		row := func(name, format string, args ...any) {
			fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{name}, args...)...)
		}
		row("interface", "%s", iface(l))
		row("rules", "%s", rules(l))
		if l.TableDefault != nil {
			row("table", "%s", *l.TableDefault)
		} else {
			row("table", "no default")
		}
		row("main", "%s", routes(l.MainDefaults))
		row("health", "%s", health(l, s.Monitor))
		if l.LAN != nil {
			row("lan", "%s on %s, announced by ifisp-watch", l.LAN.Prefix, l.LAN.Iface)
		}
		for _, n := range l.SNAT {
			to := n.To.String()
			if n.ToPrefix.IsValid() {
				to = n.ToPrefix.String() + " (NPTv6)"
			}
			row("snat", "%s -> %s: %s", n.From, to, counter(n.Counter))
		}
		if l.GuardDropped != nil {
			row("guard", "%s dropped", counter(*l.GuardDropped))
		}
		if l.Flows != nil && l.InboundFlows != nil {
			row("flows", "%d left by it, %d arrived by it (conntrack, by mark)", *l.Flows, *l.InboundFlows)
		}
		for _, d := range l.Differences {
			how := "foreign"
			if d.Missing {
				how = "missing"
			}
			row(how, "%s %s", d.Kind, d.What)
		}
		for _, p := range l.Problems {
			row("problem", "%s", p)
		}
	}
	return tw.Flush()
}

func table(l Link) string {
	if l.TableName != "" {
		return fmt.Sprintf("%s (%d)", l.TableName, l.Table)
	}
	return fmt.Sprint(l.Table)
}

func iface(l Link) string {
	if !l.Present {
		return "gone"
	}
	parts := []string{l.OperState}
	if l.Carrier {
		parts = append(parts, "carrier")
	} else {
		parts = append(parts, "no carrier")
	}
	for _, a := range l.Addresses {
		parts = append(parts, a.String())
	}
	return strings.Join(parts, ", ")
}

func rules(l Link) string {
	if len(l.Rules) == 0 {
		return "none"
	}
	var list []string
	for _, r := range l.Rules {
		sel := "fwmark " + r.Fwmark
		if r.From.IsValid() {
			sel = "from " + r.From.String()
			if r.From.IsSingleIP() {
				sel = "from " + r.From.Addr().String()
			}
		}
		list = append(list, fmt.Sprintf("%d: %s", r.Priority, sel))
	}
	return strings.Join(list, ", ")
}

func routes(list []Route) string {
	if len(list) == 0 {
		return "no default"
	}
	var s []string
	for _, r := range list {
		s = append(s, r.String())
	}
	return strings.Join(s, ", ")
}

func health(l Link, m *Monitor) string {
	h := l.Health
	if h == nil {
		return "not watched"
	}
	state := h.State
	if h.Withdrawn {
		state += ", withdrawn"
	}
	s := fmt.Sprintf("%s since %s (%s)", state, h.Since.Local().Format(timeFormat), h.Reason)
	if h.Rounds == 0 {
		return s
	}
	s += "; probes"
	if m != nil && !m.Written.IsZero() {
		s += " at " + m.Written.Local().Format("15:04:05")
	}
	s += fmt.Sprintf(": %.0f%% of the last rounds lost", h.Loss*100)
	if h.RTT > 0 {
		s += fmt.Sprintf(", last rtt %s", time.Duration(h.RTT*float64(time.Second)).Round(time.Microsecond))
	}
	return s
}

func counter(c Counter) string {
	return fmt.Sprintf("%s, %s", plural(c.Packets, "packet"), plural(c.Bytes, "byte"))
}

// plural writes n things: "1 packet", "2 packets".
func plural(n uint64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
