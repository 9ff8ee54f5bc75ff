package watch

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/converge"
	"github.com/ifisp/ifisp/pkg/linkhook"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/rundir"
)

// Repair timing. A change is looked at once it has been quiet for
// repairQuiet (an `iptables-restore` or `nft -f` is many notifications); a
// repair that follows the previous one within twice the current delay
// means something keeps deleting ifisp's pieces, and the delay doubles, up
// to repairMaxDelay, so the monitor never fights another tool: it repairs
// ever more rarely and says so. A quiet spell resets it.
const (
	repairQuiet    = 50 * time.Millisecond
	repairMinDelay = 100 * time.Millisecond
	repairMaxDelay = 30 * time.Second
	// repairSweep is how often the plans are compared with the kernel
	// without any event: the net that catches what no notification says
	// (iptables-legacy has none that tells a change of its rules).
	repairSweep = 30 * time.Second
	// legacyPoll is how often the legacy tables' sizes are read: one
	// getsockopt per table, no process.
	legacyPoll = 250 * time.Millisecond
)

// repairer decides when the plans are compared with the kernel.
type repairer struct {
	due      *time.Timer // fires when a check is due
	pending  bool        // a check is scheduled
	next     time.Time   // no repair before this (the back-off)
	delay    time.Duration
	last     time.Time            // the last repair
	legacy   bool                 // iptables-save is iptables-legacy's
	sizes    map[string][2]uint32 // legacy table → entries, size
	backends converge.Backends
}

func newRepairer() *repairer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	r := &repairer{due: t, delay: repairMinDelay, backends: converge.Exec}
	r.legacy = isLegacy()
	return r
}

// kick schedules a check: a change was heard.
func (r *repairer) kick() {
	if r.pending {
		return
	}
	r.pending = true
	r.due.Reset(max(repairQuiet, time.Until(r.next)))
}

// check compares the up links' plans with the kernel and repairs what is
// missing, holding the lock the hooks hold, so a half-done ifup is never
// taken for a deletion.
func (d *daemon) check() {
	r := d.repair
	r.pending = false
	var repaired []converge.Piece
	var woke []string
	err := rundir.Locked("ifisp-watch repair", rundir.DefaultLockTimeout, func() error {
		var err error
		woke, err = linkhook.Awake(d.h)
		if err != nil {
			d.opt.Log.Printf("bringing up links whose default came: %v", err)
		}
		woke = append(woke, d.withdrawAgain()...)
		links, err := registry.List()
		if err != nil {
			return err
		}
		if r.legacy {
			r.legacyChanged() // the tables as this check reads them
		}
		repaired, err = converge.Repair(d.h, r.backends, links)
		if r.legacy && r.legacyChanged() && len(repaired) == 0 {
			// Not this check's doing: another tool changed the tables
			// while it read them, perhaps after. The poll would not
			// see it, its sizes being taken now; one more check does.
			r.kick()
		}
		return err
	})
	for _, w := range woke {
		d.opt.Log.Printf("%s", w)
	}
	now := time.Now()
	if len(repaired) == 0 {
		if now.Sub(r.last) > 2*r.delay {
			r.delay = repairMinDelay
		}
		if err != nil {
			d.opt.Log.Printf("comparing the links' plans with the kernel: %v", err)
		}
		return
	}
	if !r.last.IsZero() && now.Sub(r.last) < 2*r.delay+repairMinDelay {
		r.delay = min(2*r.delay, repairMaxDelay)
		d.opt.Log.Printf("WARNING: something keeps deleting ifisp's rules (repaired again %v after the last time): backing off, the next repair waits %v; find the tool that deletes them (ifisp status lists what is missing)", now.Sub(r.last).Round(time.Millisecond), r.delay)
	}
	r.last, r.next = now, now.Add(r.delay)
	if r.legacy {
		// iptables-legacy tells of no change, and its tables' sizes are
		// as they were before a deletion once the repair put it back: a
		// deletion that lands between this check's writes and its
		// reading of the sizes would look like the repair itself. One
		// more check, after the back-off's delay, finds it.
		r.kick()
	}
	for _, p := range repaired {
		if l := d.links[p.Link]; l != nil {
			l.repairs++
		}
	}
	msg := "repaired " + converge.Summary(repaired)
	if err != nil {
		msg += fmt.Sprintf("; and failed: %v", err)
	}
	d.opt.Log.Printf("%s", msg)
	if err := d.writeStatus(); err != nil {
		d.opt.Log.Printf("%v", err)
	}
}

// listenKernel sends on kick whenever the kernel says a rule, route or
// address changed (rtnetlink), or nf_tables' ruleset did; it returns the
// function that stops it. A socket that cannot be opened is an error.
func listenKernel(kick chan<- struct{}, onErr func(error)) (stop func(), err error) {
	group := func(g uint32) uint32 { return 1 << (g - 1) }
	socks := []struct {
		family int
		groups uint32
		what   string
	}{
		{unix.NETLINK_ROUTE, group(unix.RTNLGRP_IPV4_RULE) | group(unix.RTNLGRP_IPV6_RULE) |
			group(unix.RTNLGRP_IPV4_ROUTE) | group(unix.RTNLGRP_IPV6_ROUTE) |
			group(unix.RTNLGRP_IPV4_IFADDR) | group(unix.RTNLGRP_IPV6_IFADDR), "rtnetlink rule, route and address events"},
		{unix.NETLINK_NETFILTER, group(unix.NFNLGRP_NFTABLES), "nf_tables notifications"},
	}
	var conns []*netlink.Conn
	stop = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for _, s := range socks {
		c, err := netlink.Dial(s.family, &netlink.Config{Groups: s.groups})
		if err != nil {
			stop()
			return nil, fmt.Errorf("subscribing to %s: %w", s.what, err)
		}
		conns = append(conns, c)
		go func() {
			for {
				if _, err := c.Receive(); err != nil && !isOverrun(err) {
					onErr(fmt.Errorf("%s: %w", s.what, err))
					return
				}
				select { // an overrun is a change too
				case kick <- struct{}{}:
				default:
				}
			}
		}()
	}
	return stop, nil
}

// isOverrun says the socket's buffer overflowed: events were lost, which
// only means a check is due.
func isOverrun(err error) bool { return errors.Is(err, unix.ENOBUFS) }

// isLegacy says whether iptables-save is iptables-legacy's, whose changes
// no notification announces.
func isLegacy() bool {
	out, err := exec.Command("iptables-save", "--version").Output()
	return err == nil && bytes.Contains(out, []byte("legacy"))
}

// legacyChanged reads the entry count and size of each legacy table of
// both families (IPT_SO_GET_INFO, one getsockopt each) and says whether
// any differs from the last reading. Only the tables the kernel has are
// asked about (/proc/net/ip_tables_names): asking for another would load
// its module, and create the table.
func (r *repairer) legacyChanged() bool {
	changed := false
	seen := map[string][2]uint32{}
	for _, fam := range []struct {
		domain, level int
		names         string
	}{{unix.AF_INET, unix.SOL_IP, "/proc/net/ip_tables_names"}, {unix.AF_INET6, unix.SOL_IPV6, "/proc/net/ip6_tables_names"}} {
		b, err := os.ReadFile(fam.names)
		if err != nil || len(b) == 0 {
			continue
		}
		fd, err := unix.Socket(fam.domain, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			continue
		}
		for _, table := range strings.Fields(string(b)) {
			entries, size, ok := tableInfo(fd, fam.level, table)
			if !ok {
				continue
			}
			k := fam.names + " " + table
			seen[k] = [2]uint32{entries, size}
			if r.sizes[k] != seen[k] {
				changed = true
			}
		}
		unix.Close(fd)
	}
	if len(seen) != len(r.sizes) {
		changed = true
	}
	r.sizes = seen
	return changed
}

// getinfo is struct ipt_getinfo (and ip6t_getinfo, the same).
type getinfo struct {
	name       [32]byte
	validHooks uint32
	hookEntry  [5]uint32
	underflow  [5]uint32
	numEntries uint32
	size       uint32
}

// soGetInfo is IPT_SO_GET_INFO and IP6T_SO_GET_INFO.
const soGetInfo = 64

func tableInfo(fd, level int, table string) (entries, size uint32, ok bool) {
	var info getinfo
	copy(info.name[:], table)
	l := uint32(unsafe.Sizeof(info))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), soGetInfo,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, 0, false
	}
	return info.numEntries, info.size, true
}
