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
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/connmark"
	"github.com/ifisp/ifisp/pkg/lan"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/rundir"
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
	Check    []netip.Addr     `json:"check,omitempty"`
	Interval Duration         `json:"check_interval"`
	Down     int              `json:"check_down"`
	Up       int              `json:"check_up"`
	// Mark is the link's place in the connection mark; Sticky its
	// isp-sticky (reconcile keeps its NATed flows when another link takes
	// the default).
	Mark   connmark.Mark `json:"mark"`
	Sticky bool          `json:"sticky"`
	// Since is when the up hook wrote the file: a link brought up again is
	// a new link, whatever the monitor thought of the old one.
	Since time.Time `json:"since"`
	// LAN is the /64 of the ISP's prefix its isp-lan interface has, which
	// the monitor's router advertisements announce; nil without isp-lan.
	LAN *lan.Subnet `json:"lan,omitempty"`
	// RDNSS is isp-rdnss: announced with the LAN's prefix.
	RDNSS []netip.Addr `json:"rdnss,omitempty"`
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

// Record writes the link of an up stanza, with the main-table defaults it
// has now (ifupdown's `gateway` route and ifisp's isp-metric one) and the
// LAN subnet it numbered (nil for none).
func Record(h *netlink.Handle, l *policy.Link, lanNet *lan.Subnet) error {
	c := l.Config
	defaults, err := policy.MainDefaults(h, l.Index, c.Family)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Iface, err)
	}
	r := Link{
		Iface: c.Iface, Family: c.Family, Table: c.Table,
		Address: l.Address, Gateway: l.Gateway, Defaults: defaults,
		Check: c.Check, Interval: Duration(c.CheckInterval), Down: c.CheckDown, Up: c.CheckUp,
		Mark: c.Mark, Sticky: c.Sticky,
		Since: time.Now().UTC(), LAN: lanNet, RDNSS: c.RDNSS,
	}
	if err := write(&r); err != nil {
		return fmt.Errorf("%s: recording the link for ifisp-watch: %w", c.Iface, err)
	}
	return nil
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

// List reads every link in the registry, sorted by key. A file that cannot
// be read is an error naming it.
func List() ([]Link, error) {
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
