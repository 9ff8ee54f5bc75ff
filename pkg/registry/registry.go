// Package registry is the list of ISP links that are up, as their ifupdown
// hooks found them: one JSON file per stanza in the links folder of the run
// directory (package rundir). ifisp-route writes a link's file at the end of
// if-up.d and removes it first thing in if-down.d; ifisp-watch follows the
// folder and never reads /etc/network/interfaces itself.
//
// Hooks and the health monitor change the same main-table routes, so they
// take turns: both hold the run directory's lock (rundir.TakeLock) while they
// change them or the registry.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/connmark"
	"github.com/ifisp/ifisp/pkg/lan"
	"github.com/ifisp/ifisp/pkg/nat"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/rundir"
	"github.com/ifisp/ifisp/pkg/sixrd"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Folder is the registry's folder inside the run directory.
const Folder = "links"

// Link is one ISP stanza that is up: what the health monitor needs to probe
// it and to withdraw and restore its main-table defaults.
type Link struct {
	Iface    string           `json:"iface"`
	Family   stanza.Family    `json:"family"`
	Table    int              `json:"table"`
	Address  netip.Addr       `json:"address"` // probes are sent from it
	Gateway  netip.Addr       `json:"gateway"` // probed when Check is empty
	Defaults []policy.Default `json:"defaults"`
	// Withdrawn says ifisp-watch has withdrawn Defaults (the ISP is
	// down): a re-run on the link (a new lease, a renumbered prefix)
	// withdraws what it or the DHCP client put back, and keeps them the
	// link's, for the monitor to restore when the ISP heals.
	Withdrawn bool         `json:"withdrawn,omitempty"`
	Check     []netip.Addr `json:"check,omitempty"`
	Interval  Duration     `json:"check_interval"`
	Down      int          `json:"check_down"`
	Up        int          `json:"check_up"`
	// Mark is the link's place in the connection mark; Sticky its
	// isp-sticky (reconcile keeps its NATed flows when another link takes
	// the default).
	Mark   connmark.Mark `json:"mark"`
	Sticky bool          `json:"sticky"`
	// Since is when the up hook wrote the file: a link brought up again
	// (after an ifdown) is a new link, whatever the monitor thought of the
	// old one. A re-run on a link that is up keeps it.
	Since time.Time `json:"since"`
	// LAN is the /64 of the ISP's prefix its isp-lan interface has, which
	// the monitor's router advertisements announce; nil without isp-lan.
	LAN *lan.Subnet `json:"lan,omitempty"`
	// RDNSS is isp-rdnss: announced with the LAN's prefix.
	RDNSS []netip.Addr `json:"rdnss,omitempty"`
	// Unwatched says the health monitor leaves the link alone (a 6rd
	// tunnel without isp-table and isp-check); status and repair do not.
	Unwatched bool `json:"unwatched,omitempty"`
	// Stanza is the stanza as ifupdown exported it (stanza.Config.Env):
	// what ifisp-lease runs the hooks with when the link's lease changes.
	Stanza []string `json:"stanza,omitempty"`
	// Lost says the link's DHCP lease or PPP session is gone: its pieces
	// are removed, and the record (never Complete) keeps the stanza for
	// the lease or session that brings it back. ifdown forgets it.
	Lost bool `json:"lost,omitempty"`
	// Delegated is the prefix the link's DHCPv6 server delegated
	// (stanza.Config.Delegation), as dhclient last told ifisp-lease: a
	// record may hold it before the link's ifup reaches if-up.d.
	Delegated netip.Prefix `json:"delegated,omitzero"`
	// Option6RD is DHCP option 212 of an inet link's lease, for the 6rd
	// stanzas whose `6rd-prefix dhcp` and `6rd-local` name the link.
	Option6RD *sixrd.Option `json:"option_6rd,omitempty"`
	// Expires is when what the link holds by DHCP stops being preferred
	// and valid, as its client last said: the delegated prefix of an
	// inet6 link, the lease of an inet one (and so the 6rd prefixes
	// numbered from its address). The LAN's router advertisements never
	// promise more (RFC 9096). nil: no end known (static, PPP).
	Expires *Lifetimes `json:"expires,omitempty"`

	// The link's plan: what of the kernel's state is the link's own.
	// Status compares it with the kernel, ifisp-watch puts back what of it
	// goes missing, ifdown removes it and nothing else.
	//
	// Routing is its rules and ISP-table routes (ifisp-route).
	Routing policy.Plan `json:"routing"`
	// Chains is its iptables (ip6tables) rules (ifisp-snat); nil for none.
	Chains *nat.Chains `json:"chains,omitempty"`
	// LANAddress is the address isp-lan put on the LAN; nil for none.
	LANAddress *lan.Published `json:"lan_address,omitempty"`
}

// Lifetimes are the ends of a lease's preferred and valid lifetimes.
type Lifetimes struct {
	Preferred time.Time `json:"preferred_until"`
	Valid     time.Time `json:"valid_until"`
}

// Leaves is what is left of l once ifdown has removed its routing and
// LAN address: its chains, which ifisp-snat's post-down removes next.
func (l *Link) Leaves() *Link {
	return &Link{Iface: l.Iface, Family: l.Family, Chains: l.Chains}
}

// Complete says the link's ifup has finished: its Since is set. A record
// without is a plan written ahead of its changes (an ifup under way, or
// killed), or one whose ifdown has begun; the health monitor and status
// leave it alone, ifdown still removes what it says.
func (l *Link) Complete() bool { return !l.Since.IsZero() }

// StanzaValue is the value of the variable name (IFACE, IF_6RD_LOCAL,
// ...) in the recorded stanza, "" when it has none.
func (l *Link) StanzaValue(name string) string {
	for _, kv := range l.Stanza {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// FollowsAddress says the link's own address is the kernel's choice with
// no client to run a hook when it changes: an `inet6 dhcp` or `inet6 auto`
// stanza without an address, numbered by SLAAC. ifisp-watch moves its plan
// when that address goes (linkhook.Awake).
func (l *Link) FollowsAddress() bool {
	m := l.StanzaValue("METHOD")
	return l.Family == stanza.Inet6 && (m == "dhcp" || m == "auto") && l.StanzaValue("IF_ADDRESS") == ""
}

// LANIface is the LAN interface its stanza's isp-lan (6rd-lan) names, ""
// for none.
func (l *Link) LANIface() string {
	v := l.StanzaValue("IF_ISP_LAN")
	if v == "" {
		v = l.StanzaValue("IF_6RD_LAN")
	}
	iface, _, _ := strings.Cut(v, ":")
	return iface
}

// Key names the link: interface and family, e.g. "wana inet".
func (l *Link) Key() string { return l.Iface + " " + string(l.Family) }

// Duration is a time.Duration written as "100ms" in JSON.
type Duration time.Duration

// MarshalText writes d as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Dir returns the registry's folder.
func Dir() string { return filepath.Join(rundir.Dir(), Folder) }

// fileName is the file of the link iface, family f, inside Folder.
func fileName(iface string, f stanza.Family) string {
	return filepath.Join(Folder, iface+"."+string(f)+".json")
}

// Plan returns the record ifisp-route writes ahead of its changes: the
// link's facts and plan, not up yet (but for a re-run on a link that is
// up). old is the link's record (nil for none), whose chains ifisp-snat
// wrote; lanAddr the address isp-lan adds.
func Plan(l *policy.Link, old *Link, lanNet *lan.Subnet, lanAddr *lan.Published) *Link {
	c := l.Config
	r := &Link{
		Iface: c.Iface, Family: c.Family, Table: c.Table,
		Address: l.Address, Gateway: l.Gateway,
		Check: c.Check, Interval: Duration(c.CheckInterval), Down: c.CheckDown, Up: c.CheckUp,
		Mark: c.Mark, Sticky: c.Sticky, LAN: lanNet, RDNSS: c.RDNSS,
		Routing: l.Plan(), LANAddress: lanAddr, Stanza: c.Env, Delegated: c.Delegated,
	}
	if old != nil {
		r.Chains, r.Option6RD = old.Chains, old.Option6RD
		if old.Delegated == r.Delegated {
			r.Expires = old.Expires // the lease's, which the re-run does not know
		}
	}
	if old != nil && old.Complete() {
		// A re-run on a link that is up (a new lease, a renumbered
		// prefix): the same link, which the monitor must neither lose for
		// the moment of the re-run (its prefix announced gone, its probes
		// stopped) nor take for a new one.
		r.Since, r.Defaults, r.Withdrawn = old.Since, old.Defaults, old.Withdrawn
	}
	return r
}

// Config parses env, a stanza as a record holds it (Link.Stanza), as
// ifupdown exports it in phase: MODE start for the up phases, stop for the
// down ones.
func Config(env []string, root, phase string) (*stanza.Config, error) {
	mode := "stop"
	if phase == "pre-up" || phase == "post-up" {
		mode = "start"
	}
	return stanza.Parse(append(slices.Clip(env), "PHASE="+phase, "MODE="+mode), root)
}

// RemoveRouting removes l's rules and ISP-table routes as its record rec
// says they are its own (what its stanza plans, for a link with no record,
// a refused or never-finished ifup, or an older ifisp's record), less what
// the other links' records keep (policy.Down).
func RemoveRouting(h *netlink.Handle, l *policy.Link, rec *Link) error {
	others, err := Others(l.Config.Iface, l.Config.Family)
	if err != nil {
		return err
	}
	own := l.Plan()
	if rec != nil && !rec.Routing.Empty() {
		own = rec.Routing
	}
	return policy.Down(h, l, own, Plans(others)...)
}

// Lease fills in what of c the records know and the stanza cannot: the
// prefix delegated to a stanza that asks for one, and for `6rd-prefix
// dhcp` the 6rd domain of option 212 in the lease of 6rd-local's link.
func Lease(c *stanza.Config) error {
	if c.Delegation {
		r, err := Read(c.Iface, c.Family)
		if err != nil {
			return err
		}
		if r != nil && r.Delegated.IsValid() {
			c.Delegate(r.Delegated)
		}
	}
	if s := c.SixRD; s != nil && s.FromDHCP {
		r, err := Read(s.LocalIface, stanza.Inet)
		if err != nil {
			return err
		}
		if r == nil || r.Option6RD == nil {
			return stanza.Errorf(c.Iface, "6rd-prefix", "dhcp", "%s's DHCP lease has no option 212 (yet): is `also request option-6rd;` in dhclient.conf, and is %s up?", s.LocalIface, s.LocalIface)
		}
		s.Fill(*r.Option6RD)
	}
	return nil
}

// Record writes r, the link of a stanza whose ifup has made its changes,
// as up: with the main-table defaults it has now (ifupdown's `gateway`
// route and ifisp's isp-metric one) and Since, unless it has one already
// (a re-run on a link that is up keeps it: see Plan). A re-run on a link
// whose defaults ifisp-watch has withdrawn withdraws the defaults there are
// now (those of a new gateway), or keeps the withdrawn ones when there are
// none.
func Record(h *netlink.Handle, index int, r *Link) error {
	defaults, err := policy.MainDefaults(h, index, r.Family)
	if err != nil {
		return fmt.Errorf("%s: %w", r.Iface, err)
	}
	if !r.Withdrawn || len(defaults) > 0 {
		r.Defaults = defaults
	}
	if r.Withdrawn {
		if _, err := policy.RemoveDefaults(h, index, r.Family, defaults); err != nil {
			return fmt.Errorf("%s: its ISP is down (ifisp-watch withdrew its defaults): %w", r.Iface, err)
		}
	}
	if r.Since.IsZero() {
		r.Since = time.Now().UTC()
	}
	return Write(r)
}

// Write writes r's file as it is.
func Write(r *Link) error {
	if err := write(r); err != nil {
		return fmt.Errorf("%s: recording the link: %w", r.Iface, err)
	}
	return nil
}

// Update changes the record of iface, family f with change, under the
// lock the caller holds; a link with no record gets a new one, not up.
func Update(iface string, f stanza.Family, change func(*Link)) error {
	r, err := Read(iface, f)
	if err != nil {
		return err
	}
	if r == nil {
		r = &Link{Iface: iface, Family: f}
	}
	change(r)
	return Write(r)
}

// Others lists every record, up or not, but the link iface, family f's:
// the links whose plans iface's hooks must leave alone.
func Others(iface string, f stanza.Family) ([]Link, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	var others []Link
	for _, l := range all {
		if l.Iface != iface || l.Family != f {
			others = append(others, l)
		}
	}
	return others, nil
}

// Plans lists the routing plans of links.
func Plans(links []Link) []policy.Plan {
	var plans []policy.Plan
	for _, l := range links {
		plans = append(plans, l.Routing)
	}
	return plans
}

// write writes l's file.
func write(l *Link) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return rundir.Write(fileName(l.Iface, l.Family), append(b, '\n'))
}

// Forget removes the link's file; one that is not there is forgotten.
func Forget(iface string, f stanza.Family) error {
	if err := rundir.Remove(fileName(iface, f)); err != nil {
		return fmt.Errorf("%s: removing the link from ifisp-watch's registry: %w", iface, err)
	}
	return nil
}

// List reads every link in the registry that is up, sorted by key. A file
// that cannot be read is an error naming it.
func List() ([]Link, error) {
	all, err := All()
	var up []Link
	for _, l := range all {
		if l.Complete() {
			up = append(up, l)
		}
	}
	return up, err
}

// All reads every record in the registry, up or not, sorted by key.
func All() ([]Link, error) {
	entries, err := os.ReadDir(Dir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var links []Link
	for _, e := range entries {
		// IFACE.FAMILY.json; an interface name may have dots (eth2.4).
		name, isJSON := strings.CutSuffix(e.Name(), ".json")
		dot := strings.LastIndexByte(name, '.')
		if !isJSON || dot <= 0 || strings.HasPrefix(name, ".") {
			continue
		}
		iface, f := name[:dot], name[dot+1:]
		l, err := Read(iface, stanza.Family(f))
		if err != nil {
			return nil, err
		}
		if l != nil { // nil: removed meanwhile
			links = append(links, *l)
		}
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Key() < links[j].Key() })
	return links, nil
}

// Read returns the link iface, family f, or nil when it is not registered.
func Read(iface string, f stanza.Family) (*Link, error) {
	b, err := rundir.Read(fileName(iface, f))
	if err != nil || b == nil {
		return nil, err
	}
	var l Link
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(rundir.Dir(), fileName(iface, f)), err)
	}
	return &l, nil
}
