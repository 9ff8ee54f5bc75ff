// Package explain prints, as shell commands, what `ifup IFACE` would do,
// changing nothing: `ifisp explain`. Operators trust what they can read.
//
// ifupdown's own part comes from ifupdown itself: `ifup --no-act` prints
// the commands of the stanzas' methods, their pre-up and up lines, and a
// `run-parts` line for each hook folder, exactly as ifup would run them.
// At each run-parts line come the hooks of that folder, in run-parts
// order, as they are installed: for ifisp's, the commands that do what
// the hook would do (computed by the hooks' own code: stanza.Parse,
// policy.Link.Plan, nat.Changes, sixrdlink.Resolve), for anyone else's a
// comment.
//
// ifup is asked about the interface as if it were down (a state folder of
// its own) and without mapping scripts (the stanzas are those of the
// logical name IFACE), and ifisp's commands are those for the kernel as it
// is now, with the link down: what `ifdown IFACE` leaves. The iptables-restore
// payloads are the differences from the tables as they are now, so they
// take the other links' chains into account; the routes and rules are
// the link's whole plan. What cannot be known before the moment is said
// in comments: the conntrack entries the reconcile deletes, the lease of
// an `inet dhcp` stanza.
package explain

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/hooks"
	"github.com/ifisp/ifisp/pkg/connmark"
	"github.com/ifisp/ifisp/pkg/interfaces"
	"github.com/ifisp/ifisp/pkg/lan"
	"github.com/ifisp/ifisp/pkg/nat"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/sixrdlink"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Options are what Write needs besides the stanza.
type Options struct {
	// Root is the filesystem root of rt_tables and rt_protos ("/").
	Root string
	// NetworkDir is where the hook folders are: "/etc/network" on a
	// live system. ifup --no-act names them under /etc/network; they are
	// looked for here instead.
	NetworkDir string
	// Ifup is ifupdown's ifup ("ifup" from PATH).
	Ifup string
	// Handle is the netlink handle of the namespace the commands are for;
	// nil: the kernel is not asked (what the stanza leaves to it stays
	// unknown).
	Handle *netlink.Handle
	// Backend returns the iptables backend of a family (nat.NewExec).
	Backend func(stanza.Family) (nat.Backend, error)
}

// Write writes the commands `ifup iface` would run for the interfaces
// file at path.
func Write(w io.Writer, path, iface string, opt Options) error {
	if opt.Root == "" {
		opt.Root = "/"
	}
	if opt.NetworkDir == "" {
		opt.NetworkDir = "/etc/network"
	}
	if opt.Ifup == "" {
		opt.Ifup = "ifup"
	}
	if opt.Backend == nil {
		opt.Backend = func(f stanza.Family) (nat.Backend, error) { return nat.NewExec(f) }
	}
	f, err := interfaces.Read(path)
	if err != nil {
		return fmt.Errorf("%v (ifisp check %s says more)", err, path)
	}
	stanzas := f.Find(iface)
	if len(stanzas) == 0 {
		return fmt.Errorf("%s: no iface %s stanza (ifup %s would say: unknown interface)", path, iface, iface)
	}
	lines, err := noAct(opt.Ifup, path, iface)
	if err != nil {
		return err
	}
	e := &explainer{w: bufio.NewWriter(w), opt: opt, proto: stanza.ProtoName(opt.Root, policy.Protocol)}
	e.printf("# ifup %s, as commands, for %s (nothing has been changed).\n", iface, path)
	e.printf("# ifupdown's own, from ifup --no-act, and at each run-parts the hooks it runs.\n")
	// Each stanza, in file order, runs its if-pre-up.d, then its method's
	// commands, then its if-up.d.
	next := 0
	var cur *interfaces.Stanza
	for _, line := range lines {
		folder, ok := runParts(line)
		if !ok {
			e.printf("%s\n", line)
			continue
		}
		if folder == "pre-up" {
			if next >= len(stanzas) {
				return fmt.Errorf("ifup --no-act ran more stanzas of %s than %s has", iface, path)
			}
			cur = stanzas[next]
			next++
			e.printf("\n# %s: iface %s %s %s\n", cur.Pos, cur.Name, cur.Family, cur.Method)
		}
		if cur == nil {
			return fmt.Errorf("ifup --no-act ran %s before if-pre-up.d", line)
		}
		if err := e.folder(cur, folder); err != nil {
			return err
		}
	}
	return e.w.Flush()
}

type explainer struct {
	w     *bufio.Writer
	opt   Options
	proto string
	// done is the iptables payloads already printed, per family: a second
	// stanza of one family would be computed against tables that lack
	// them, so it says so.
	done map[stanza.Family]bool
}

func (e *explainer) printf(format string, args ...any) { fmt.Fprintf(e.w, format, args...) }

// noAct runs ifup --no-act for iface in a state folder of its own, and
// returns the commands it prints.
func noAct(ifup, path, iface string) ([]string, error) {
	state, err := os.MkdirTemp("", "ifisp-explain-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(state)
	var out bytes.Buffer
	cmd := exec.Command(ifup, "--no-act", "--no-mappings", "--interfaces", path, "--state-dir", state, iface)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("%s not found: explain asks Debian's ifupdown what it runs (apt install ifupdown)", ifup)
		}
		return nil, fmt.Errorf("ifup --no-act %s: %v\n%s", iface, err, strings.TrimSpace(out.String()))
	}
	var lines []string
	for _, l := range strings.Split(out.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// runPartsLine matches ifupdown's run-parts line of a hook folder.
var runPartsLine = regexp.MustCompile(`^(?:/bin/)?run-parts (?:--[a-z-]+ )*/etc/network/if-(pre-up|up|down|post-down)\.d$`)

// runParts returns the phase folder a run-parts line runs.
func runParts(line string) (string, bool) {
	m := runPartsLine.FindStringSubmatch(line)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// hookName matches the names run-parts runs.
var hookName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ifispHooks are ifisp's hook binaries, from hooks/layout.
var ifispHooks = hooks.Binaries()

// folder prints what the hooks of if-FOLDER.d do for s.
func (e *explainer) folder(s *interfaces.Stanza, folder string) error {
	dir := filepath.Join(e.opt.NetworkDir, "if-"+folder+".d")
	e.printf("# run-parts /etc/network/if-%s.d:\n", folder)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ours := 0
	for _, ent := range entries {
		path := filepath.Join(dir, ent.Name())
		st, err := os.Stat(path)
		if !hookName.MatchString(ent.Name()) || err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			continue
		}
		binary := ent.Name()
		if target, err := filepath.EvalSymlinks(path); err == nil {
			binary = filepath.Base(target)
		}
		binary = strings.TrimPrefix(binary, "zz-")
		if !ifispHooks[binary] {
			e.printf("#   %s: not ifisp's (explain cannot tell what it does)\n", ent.Name())
			continue
		}
		ours++
		if err := e.hook(s, folder, ent.Name(), binary); err != nil {
			return err
		}
	}
	if ours == 0 {
		e.printf("#   no ifisp hook is installed there\n")
	}
	return nil
}

// hook prints what one of ifisp's hooks does for s in folder.
func (e *explainer) hook(s *interfaces.Stanza, folder, name, binary string) error {
	phase := folder
	if phase == "up" {
		phase = "post-up"
	}
	c, err := stanza.Parse(s.Env("", phase), e.opt.Root)
	if errors.Is(err, stanza.ErrNotOptedIn) {
		e.printf("#   %s: nothing (not an ifisp stanza)\n", name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("ifup would stop in if-pre-up.d: %w", err)
	}
	switch {
	case binary == "ifisp-snat" && phase == "pre-up":
		e.printf("#   %s: checks the stanza, then SNAT and the egress guard, before the address exists\n", name)
		return e.nat(c)
	case phase == "pre-up":
		e.printf("#   %s: checks the stanza\n", name)
	case binary == "ifisp-route" && phase == "post-up" && c.SixRD == nil:
		e.printf("#   %s: the ISP table, the `from` rules, the isp-metric default\n", name)
		return e.route(c)
	case binary == "ifisp-snat" && phase == "post-up" && !c.Address.IsValid() && c.SixRD == nil:
		e.printf("#   %s: SNAT and the egress guard for the address %s gave\n", name, c.Method)
		return e.nat(c)
	case binary == "ifisp-6rd" && phase == "post-up" && c.SixRD != nil:
		e.printf("#   %s: the tunnel's 6rd parameters, the address from the delegated prefix, its routing\n", name)
		return e.sixrd(s, c)
	case binary == "ifisp-conntrack" && phase == "post-up" && c.Reconciled():
		f := "ipv4"
		if c.Family == stanza.Inet6 {
			f = "ipv6"
		}
		e.printf("#   %s: only if %s now has the main table's preferred default: for each other link that is up, not isp-sticky,\n", name, c.Iface)
		e.printf("#     conntrack -D -f %s --mark ITS-OUTBOUND-MARK/%s --src-nat   (in one kernel request each)\n", f, connmark.Hex(c.Mark.Mask))
	default:
		e.printf("#   %s: nothing for this stanza here\n", name)
	}
	return nil
}

// link resolves c's link as the hooks do.
func (e *explainer) link(c *stanza.Config) (*policy.Link, error) {
	if e.opt.Handle == nil {
		return &policy.Link{Config: c, Address: c.Address.Addr(), Gateway: c.ISPGateway}, nil
	}
	return policy.Resolve(e.opt.Handle, c)
}

// nat prints ifisp-snat's iptables-restore payload for c.
func (e *explainer) nat(c *stanza.Config) error {
	if c.SixRD != nil {
		e.printf("#     nothing: a 6rd tunnel's sources come from its delegated prefix, which ifisp-6rd computes\n")
		return nil
	}
	l, err := e.link(c)
	if err != nil {
		return err
	}
	if !l.Address.IsValid() {
		e.printf("#     nothing yet: the address of %s %s comes later (if-up.d installs them)\n", c.Method, c.Family)
		return nil
	}
	b, err := e.opt.Backend(c.Family)
	if err != nil {
		return err
	}
	payload, err := nat.Changes(b, &nat.Link{Config: c, Address: l.Address})
	if err != nil {
		return err
	}
	if payload == "" {
		e.printf("#     nothing: the chains are in place already\n")
		return nil
	}
	if e.done == nil {
		e.done = map[stanza.Family]bool{}
	}
	if e.done[c.Family] {
		e.printf("#     (computed against the tables as they are now, without the payload above)\n")
	}
	e.done[c.Family] = true
	restore := "iptables-restore"
	if c.Family == stanza.Inet6 {
		restore = "ip6tables-restore"
	}
	e.printf("%s --noflush <<'EOF'\n%sEOF\n", restore, payload)
	return nil
}

// route prints ifisp-route's commands for c.
func (e *explainer) route(c *stanza.Config) error {
	l, err := e.link(c)
	if err != nil {
		return err
	}
	if !l.Address.IsValid() || !l.Gateway.IsValid() {
		e.printf("#     the routes of %s address %s and gateway %s, once %s has given them\n", c.Iface, orUnknown(l.Address), orUnknown(l.Gateway), c.Method)
		return nil
	}
	s, hasLAN, err := lan.Native(c)
	if err != nil {
		return err
	}
	if hasLAN {
		// As the hook does: the LAN address first, and its /64 thrown
		// back to the main table.
		e.printf("ip -6 addr replace %s dev %s\n", s.Address(), s.Iface)
		routed := *l
		routed.Config = lan.Routed(c, s)
		l = &routed
	}
	e.plan(c, l)
	e.printf("#     and records the link for ifisp-watch: %s\n", filepath.Join(registry.Dir(), c.Iface+"."+string(c.Family)+".json"))
	return nil
}

// plan prints policy.Up's commands for p, a plan of c's link.
func (e *explainer) plan(c *stanza.Config, l *policy.Link) {
	p := l.Plan()
	for _, r := range p.Routes {
		e.printf("%s route replace %s proto %s\n", ip(c), r, e.protoString(policy.Protocol))
	}
	for _, r := range p.Rules {
		e.printf("%s rule add %s proto %s\n", ip(c), r, e.protoString(policy.Protocol))
	}
	if m := l.MainDefault(); m != nil {
		e.printf("%s\n", e.routeCmd("add", c, m))
	}
}

// sixrd prints ifisp-6rd's commands for c, the 6rd stanza s: those of
// sixrdlink.Up for the tunnel ifupdown has just made.
func (e *explainer) sixrd(s *interfaces.Stanza, c *stanza.Config) error {
	if e.opt.Handle == nil && c.SixRD.LocalIface != "" {
		return fmt.Errorf("%s: 6rd-local %s: explaining needs the kernel, which knows the interface's address", c.Iface, c.SixRD.LocalIface)
	}
	// Without 6rd-local, the address of the tunnel: the stanza's `local`.
	var local netip.Addr
	for _, v := range s.Variables(c.Iface) {
		if v.Name == "local" {
			local, _ = netip.ParseAddr(v.Value)
		}
	}
	p, err := sixrdlink.Resolve(e.opt.Handle, c, local)
	if err != nil {
		return fmt.Errorf("ifup would fail in if-up.d: %w", err)
	}
	e.printf("ip tunnel 6rd dev %s 6rd-prefix %s 6rd-relay_prefix %s\n", c.Iface, c.SixRD.Prefix, p.RelayPrefix)
	e.printf("ip -6 addr replace %s dev %s\n", p.Address, p.AddressDev(c))
	if c.Table != 0 {
		e.plan(c, p.Link(c, 0))
	} else if r := p.MainDefault(c, 0); r != nil {
		e.printf("%s\n", e.routeCmd("replace", c, r))
	}
	e.printf("#     and records the delegated prefix %s (of %s) with the link's plan: %s\n", p.Delegated, p.Local, filepath.Join(registry.Dir(), c.Iface+"."+string(c.Family)+".json"))
	return nil
}

func orUnknown(a netip.Addr) string {
	if a.IsValid() {
		return a.String()
	}
	return "(not known yet)"
}

// ip is the ip command for c's family.
func ip(c *stanza.Config) string {
	if c.Family == stanza.Inet6 {
		return "ip -6"
	}
	return "ip"
}

// routeCmd writes r as `ip route VERB ...`.
func (e *explainer) routeCmd(verb string, c *stanza.Config, r *netlink.Route) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s route %s ", ip(c), verb)
	if r.Type == unix.RTN_THROW {
		b.WriteString("throw ")
	}
	b.WriteString(prefix(r.Dst))
	if len(r.Gw) > 0 {
		fmt.Fprintf(&b, " via %s", gateway(r.Gw))
	}
	if r.Type != unix.RTN_THROW {
		fmt.Fprintf(&b, " dev %s", c.Iface)
	}
	if r.Table != unix.RT_TABLE_MAIN && r.Table != 0 {
		fmt.Fprintf(&b, " table %d", r.Table)
	}
	if r.Priority != 0 {
		fmt.Fprintf(&b, " metric %d", r.Priority)
	}
	if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
		b.WriteString(" onlink")
	}
	fmt.Fprintf(&b, " proto %s", e.protoString(int(r.Protocol)))
	return b.String()
}

// prefix writes a destination or source as ip takes it: "default", a host
// without its length, a prefix with.
func prefix(n *net.IPNet) string {
	if n == nil {
		return "default"
	}
	ones, bits := n.Mask.Size()
	switch {
	case ones == 0:
		return "default"
	case ones == bits:
		return n.IP.String()
	}
	return n.String()
}

// gateway writes a gateway as ip prints it: a 6rd relay's ::<IPv4> with
// the IPv4 address dotted.
func gateway(gw net.IP) string {
	if gw.To4() == nil && gw.Mask(net.CIDRMask(96, 128)).IsUnspecified() && !gw.IsUnspecified() && !gw.IsLoopback() {
		return "::" + net.IP(gw[12:]).String()
	}
	return gw.String()
}

func (e *explainer) protoString(p int) string {
	if p == policy.Protocol && e.proto != "" {
		return e.proto
	}
	return fmt.Sprint(p)
}
