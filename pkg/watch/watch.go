// Package watch is ifisp-watch, the health monitor: it probes every ISP
// link in the registry (package registry) from the link's own address,
// withdraws the main-table defaults of a link that stops answering or loses
// its carrier, and puts them back, as they were, once it answers again;
// each time it reconciles conntrack as the hooks do. The ISP tables and the
// `from` rules stay, so probes and inbound connections keep working on a
// withdrawn link.
//
// All decisions are made by one goroutine (Run's loop); probes, netlink and
// the registry folder only send it events.
package watch

import (
	"context"
	"errors"
	"fmt"
	"log"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/probe"
	"github.com/ifisp/ifisp/pkg/ra"
	"github.com/ifisp/ifisp/pkg/reconcile"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/rundir"
)

// Options configures Run.
type Options struct {
	// NotifyDir holds the executables run on every transition.
	NotifyDir string
	// Log gets one line per transition, and the daemon's start and stop.
	Log *log.Logger
	// Reload makes Run read the registry again (SIGHUP).
	Reload <-chan os.Signal
	// Metrics is the file the links' health is written to, in the
	// Prometheus text format, for node_exporter's textfile collector; ""
	// writes none. It is rewritten (atomically) every MetricsInterval and
	// at every transition, and removed when the monitor stops.
	Metrics string
	// MetricsInterval is how often Metrics and the state file's probe
	// figures are rewritten; DefaultMetricsInterval when 0.
	MetricsInterval time.Duration
	// NoRA sends no router advertisements for the links' isp-lan
	// prefixes (package ra): something else announces them.
	NoRA bool
}

// DefaultMetricsInterval is how often the probe figures are published:
// node_exporter is scraped every 15 s or so, and each rewrite costs a file
// and a rename.
const DefaultMetricsInterval = 5 * time.Second

// link is one registered link as the monitor sees it.
type link struct {
	reg       registry.Link
	health    health
	withdrawn bool      // its main-table defaults are withdrawn by us
	unsure    bool      // adopted from a previous instance: make the kernel agree
	reason    string    // why it is in its state
	since     time.Time // when it entered its state
	stop      context.CancelFunc
	probes    probeStats
	repairs   int // pieces of its plan put back
}

func (l *link) key() string { return l.reg.Key() }

// round is one probe round's verdict for the link registered at since.
type round struct {
	key   string
	since time.Time
	ok    bool
	// rtt is the round trip of the last answer that came in during the
	// round, 0 when none did.
	rtt time.Duration
}

type daemon struct {
	opt    Options
	ctx    context.Context
	h      *netlink.Handle
	links  map[string]*link
	rounds chan round
	notify *notifier
	ra     *ra.Sender // nil with NoRA
	repair *repairer
	// coming are the LAN interfaces of links whose ifup is under way (or
	// that wait for a lease or a router advertisement): their sockets
	// open ahead, so the link's first advertisement waits for nothing.
	coming []string
}

// errGone says that a link left the registry before the monitor acted on
// it: from ifdown on, its routes are the hooks' business.
var errGone = errors.New("no longer registered")

// Run watches the links until ctx ends, then restores every default it
// withdrew and removes its state file.
func Run(ctx context.Context, opt Options) error {
	h, err := policy.NewHandle()
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	defer h.Close()
	if err := os.MkdirAll(registry.Dir(), 0o755); err != nil {
		return err
	}
	changed, closeDir, err := watchDir(registry.Dir())
	if err != nil {
		return err
	}
	defer closeDir()
	done := make(chan struct{})
	defer close(done)
	fail := make(chan error, 2)
	onErr := func(err error) {
		select {
		case fail <- err:
		default:
		}
	}
	// The subscriptions report what they skip too: a message from another
	// process than the kernel (another root process's dump request with
	// ListExisting reaches every listener of the group), an error message.
	// What ends one closes its channel, handled below.
	skipped := func(err error) { opt.Log.Printf("netlink events: skipped: %v", err) }
	linkCh := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(linkCh, done, netlink.LinkSubscribeOptions{ErrorCallback: skipped}); err != nil {
		return fmt.Errorf("subscribing to link events: %w", err)
	}
	addrCh := make(chan netlink.AddrUpdate, 64)
	if err := netlink.AddrSubscribeWithOptions(addrCh, done, netlink.AddrSubscribeOptions{ErrorCallback: skipped}); err != nil {
		return fmt.Errorf("subscribing to address events: %w", err)
	}

	if opt.MetricsInterval <= 0 {
		opt.MetricsInterval = DefaultMetricsInterval
	}
	publish := time.NewTicker(opt.MetricsInterval)
	defer publish.Stop()

	probes, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	d := &daemon{opt: opt, ctx: probes, h: h, links: map[string]*link{}, rounds: make(chan round, 64), notify: newNotifier(opt.NotifyDir, opt.Log), repair: newRepairer()}
	defer d.notify.close()
	if !opt.NoRA {
		d.ra = ra.New(probes, opt.Log)
	}

	// A previous instance's state: a link it had withdrawn stays withdrawn
	// until it has earned its way back, so a restart after a crash does not
	// send traffic to a dead link for a second.
	prev, err := ReadStatus()
	if err != nil {
		opt.Log.Printf("ignoring the previous state: %v", err)
	}
	if err := d.scan(prev); err != nil {
		return err
	}
	opt.Log.Printf("watching %d links", len(d.links))

	// Repair: what another tool deletes of the links' plans is put back.
	kick := make(chan struct{}, 1)
	stopListening, err := listenKernel(kick, onErr)
	if err != nil {
		return err
	}
	defer stopListening()
	sweep := time.NewTicker(repairSweep)
	defer sweep.Stop()
	var legacy <-chan time.Time
	if d.repair.legacy {
		t := time.NewTicker(legacyPoll)
		defer t.Stop()
		legacy = t.C
		d.repair.legacyChanged()
	}
	d.repair.kick() // what changed while no monitor ran

	for {
		select {
		case <-ctx.Done():
			stopProbes()
			return d.shutdown()
		case err := <-fail:
			return fmt.Errorf("netlink events: %w (restart to resynchronize)", err)
		case <-changed:
			err = d.scan(nil)
		case <-opt.Reload:
			opt.Log.Printf("SIGHUP: reading the registry again")
			err = d.scan(nil)
		case u, ok := <-linkCh:
			if !ok {
				return errors.New("netlink link events ended (restart to resynchronize)")
			}
			err = d.linkEvent(u)
		case u, ok := <-addrCh:
			if !ok {
				return errors.New("netlink address events ended (restart to resynchronize)")
			}
			err = d.addrEvent(u)
		case r := <-d.rounds:
			d.probeRound(r)
		case <-publish.C:
			err = d.writeStatus()
		case <-kick:
			d.repair.kick()
		case <-sweep.C:
			d.repair.kick()
		case <-legacy:
			if d.repair.legacyChanged() {
				d.repair.kick()
			}
		case <-d.repair.due.C:
			d.check()
		}
		if err != nil {
			opt.Log.Printf("%v", err)
		}
	}
}

// scan reads the registry: new links are watched, links gone (ifdown) are
// forgotten without touching their routes, links brought up again start
// afresh. prev, when given, is a previous instance's state to adopt.
func (d *daemon) scan(prev *Status) error {
	regs, err := registry.All()
	if err != nil {
		return fmt.Errorf("reading the registry: %w", err)
	}
	seen := map[string]bool{}
	var fresh []*link
	d.coming = nil
	for _, reg := range regs {
		if !reg.Complete() {
			if lan := reg.LANIface(); lan != "" {
				d.coming = append(d.coming, lan)
			}
			continue
		}
		if reg.Unwatched {
			continue // the hooks' and the repair's only
		}
		key := reg.Key()
		seen[key] = true
		l := d.links[key]
		if l != nil && l.reg.Since.Equal(reg.Since) {
			was := l.reg
			was.Expires = reg.Expires               // a renewed lease: nothing to restart
			restart := !reflect.DeepEqual(was, reg) // a re-run, or edited by hand
			l.reg = reg
			if restart {
				l.stop()
				l.unsure = true // a re-run's defaults: make them agree
				d.startProbes(l)
			}
			continue
		}
		if l != nil {
			l.stop()
		}
		l = &link{reg: reg, health: health{state: Up}, reason: "brought up", since: reg.Since}
		if p := prev.find(reg); p != nil {
			l.health.state, l.withdrawn, l.reason, l.since = p.State, p.Withdrawn, p.Reason, p.Since
			l.unsure = true
		}
		d.links[key] = l
		d.startProbes(l)
		fresh = append(fresh, l)
	}
	for key, l := range d.links {
		if !seen[key] {
			l.stop()
			delete(d.links, key)
		}
	}
	for _, l := range fresh {
		if nl, err := d.h.LinkByName(l.reg.Iface); err != nil || !carrier(nl.Attrs().RawFlags) {
			d.fail(l, "no carrier")
		}
	}
	d.apply()
	d.announce()
	return d.writeStatus()
}

// startProbes starts the link's prober.
func (d *daemon) startProbes(l *link) {
	ctx, cancel := context.WithCancel(d.ctx)
	l.stop = cancel
	go probeLoop(ctx, l.reg, d.rounds, d.opt.Log)
}

// probeLoop sends a round of echo requests to every target each interval
// and reports, at the next tick, whether anything answered meanwhile. An
// answer to any of the last `down` rounds counts: a link slower than the
// interval is slow, not dead. While no probe socket can be opened from
// the link's address, every round is unanswered; logger hears of that once
// (and again if the reason changes), and once more when it opens.
func probeLoop(ctx context.Context, reg registry.Link, out chan<- round, logger *log.Logger) {
	targets := reg.Check
	if len(targets) == 0 {
		targets = []netip.Addr{reg.Gateway}
	}
	var seq atomic.Uint32
	var answered atomic.Bool
	var rtt atomic.Int64 // of the round's last answer, in ns
	window := uint16(max(reg.Down, 1))
	// sent holds each request's send time, by sequence number modulo
	// the window: an answer older than the window counts for nothing.
	sent := make([]atomic.Int64, window)
	var p *probe.Pinger
	defer func() {
		if p != nil {
			p.Close()
		}
	}()
	tick := time.NewTicker(time.Duration(reg.Interval))
	defer tick.Stop()
	var failed string             // why the last Listen failed
	broken := make(chan error, 1) // Receive's, if reading fails
	for first := true; ; first = false {
		select {
		case err := <-broken:
			logger.Printf("%s %s: reading probe answers on %s: %v; opening the socket again", reg.Iface, reg.Family, reg.Address, err)
			p.Close()
			p = nil
		default:
		}
		if p == nil { // the address may come back later
			var err error
			if p, err = probe.Listen(reg.Address, reg.Iface); err != nil {
				if err.Error() != failed {
					failed = err.Error()
					logger.Printf("%s %s: no probes: %v; every round counts as unanswered until the socket opens (is %s still on %s?), retrying each round",
						reg.Iface, reg.Family, err, reg.Address, reg.Iface)
				}
			} else {
				if failed != "" {
					logger.Printf("%s %s: probing from %s again", reg.Iface, reg.Family, reg.Address)
					failed = ""
				}
				go func(p *probe.Pinger) {
					if err := p.Receive(func(s uint16) {
						if uint16(seq.Load())-s < window {
							answered.Store(true)
							if at := sent[s%window].Load(); at != 0 {
								rtt.Store(max(time.Now().UnixNano()-at, 1))
							}
						}
					}); err != nil {
						broken <- err
					}
				}(p)
			}
		}
		s := uint16(seq.Add(1))
		sent[s%window].Store(time.Now().UnixNano())
		for _, t := range targets {
			if p != nil {
				p.Send(t, s) // a failed send is an unanswered round
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if first {
			continue
		}
		select {
		case out <- round{key: reg.Key(), since: reg.Since, ok: answered.Swap(false), rtt: time.Duration(rtt.Swap(0))}:
		case <-ctx.Done():
			return
		}
	}
}

// probeRound feeds a probe round to the link's hysteresis.
func (d *daemon) probeRound(r round) {
	l := d.links[r.key]
	if l == nil || !l.reg.Since.Equal(r.since) {
		return // a prober of a link since forgotten
	}
	l.probes.round(r.ok, r.rtt, time.Now())
	old := l.health.state
	if !l.health.round(r.ok, l.reg.Down, l.reg.Up) {
		return
	}
	reason := fmt.Sprintf("%d rounds of %s answered by %s", l.reg.Up, time.Duration(l.reg.Interval), targetsString(l.reg))
	if l.health.state == Down {
		reason = fmt.Sprintf("no answer from %s in %d rounds of %s", targetsString(l.reg), l.reg.Down, time.Duration(l.reg.Interval))
	}
	d.transition(l, old, reason)
}

// linkEvent marks a link down at once when its interface loses carrier or
// goes away; a carrier that comes back must still earn the link's way up.
func (d *daemon) linkEvent(u netlink.LinkUpdate) error {
	lost := u.Header.Type == unix.RTM_DELLINK || !carrier(u.Attrs().RawFlags)
	if !lost {
		return nil
	}
	return d.failWhere(func(l *link) bool { return l.reg.Iface == u.Attrs().Name }, "carrier lost")
}

// addrEvent marks a link down at once when its address is removed.
func (d *daemon) addrEvent(u netlink.AddrUpdate) error {
	if u.NewAddr {
		return nil
	}
	a, _ := netip.AddrFromSlice(u.LinkAddress.IP)
	return d.failWhere(func(l *link) bool { return l.reg.Address == a.Unmap() && !d.moves(l) }, "address "+a.Unmap().String()+" removed")
}

// moves says whether l's plan follows its address (SLAAC) to another usable
// one its interface has: the repair check moves it (linkhook.Awake), and
// the link has not failed.
func (d *daemon) moves(l *link) bool {
	if !l.reg.FollowsAddress() {
		return false
	}
	nl, err := d.h.LinkByName(l.reg.Iface)
	if err != nil {
		return false
	}
	addrs, err := d.h.AddrList(nl, policy.NetlinkFamily(l.reg.Family))
	if err != nil {
		return false
	}
	other := policy.OwnAddress(addrs)
	return other.IsValid() && other != l.reg.Address
}

// failWhere fails the links match picks. It reads the registry first: an
// ifdown removes the link from it before it removes the address, and that
// is no failure.
func (d *daemon) failWhere(match func(*link) bool, reason string) error {
	var hit bool
	for _, l := range d.links {
		hit = hit || match(l)
	}
	if !hit {
		return nil
	}
	if err := d.scan(nil); err != nil {
		return err
	}
	for _, key := range d.keys() {
		if l := d.links[key]; match(l) {
			d.fail(l, reason)
		}
	}
	return nil
}

// fail marks l down at once.
func (d *daemon) fail(l *link, reason string) {
	old := l.health.state
	if l.health.fail() {
		d.transition(l, old, reason)
	}
}

// transition records l's new state, acts on it, logs one line and runs the
// notify hooks. The state file is written before the routes change, so a
// crash in between restarts into the decision already made.
func (d *daemon) transition(l *link, old State, reason string) {
	now := time.Now()
	l.reason, l.since = reason, now
	l.probes.transitions++
	if err := d.writeStatus(); err != nil {
		d.opt.Log.Printf("%v", err)
	}
	did := d.apply()
	d.announce()
	if l.health.state == Down && !l.withdrawn && len(l.reg.Defaults) > 0 {
		did = append([]string{"defaults kept: no other " + string(l.reg.Family) + " link is up (last resort)"}, did...)
	}
	if err := d.writeStatus(); err != nil {
		d.opt.Log.Printf("%v", err)
	}
	line := fmt.Sprintf("%s %s: %s -> %s at %s: %s", l.reg.Iface, l.reg.Family, old, l.health.state, now.Format("15:04:05.000"), reason)
	if len(did) > 0 {
		line += "; " + strings.Join(did, "; ")
	}
	d.opt.Log.Print(line)
	d.notify.send(l, old, now)
}

// apply withdraws and restores main-table defaults as the links' states and
// the last-resort rule want, then reconciles conntrack for the links that moved.
// It returns what it did, for the log.
func (d *daemon) apply() []string {
	keys := d.keys()
	cands := make([]candidate, len(keys))
	for i, k := range keys {
		l := d.links[k]
		cands[i] = candidate{family: string(l.reg.Family), state: l.health.state, defaults: len(l.reg.Defaults) > 0}
	}
	var did []string
	var left, took []*link // links whose defaults went, came
	for i, want := range withdrawals(cands) {
		l := d.links[keys[i]]
		if want == l.withdrawn && !l.unsure {
			continue
		}
		n, err := d.setWithdrawn(l, want)
		switch {
		case errors.Is(err, errGone):
			continue
		case err != nil:
			did = append(did, fmt.Sprintf("%s %s: %v", l.reg.Iface, l.reg.Family, err))
			continue
		}
		changed := want != l.withdrawn || n > 0
		l.withdrawn, l.unsure = want, false
		if !changed {
			continue
		}
		verb := "restored"
		if want {
			verb = "withdrawn"
		}
		did = append(did, fmt.Sprintf("%s %s: %d main-table defaults %s", l.reg.Iface, l.reg.Family, n, verb))
		if want {
			left = append(left, l)
		} else {
			took = append(took, l)
		}
	}
	if len(left)+len(took) > 0 {
		if err := rundir.Locked("ifisp-watch conntrack reconcile", rundir.DefaultLockTimeout, func() error {
			return d.reconcile(left, took)
		}); err != nil {
			did = append(did, fmt.Sprintf("conntrack: %v", err))
		}
	}
	return did
}

// reconcile deletes the flows NATed to the links whose defaults went, then
// those NATed to the others when a link whose default came is preferred
// now, as ifisp-conntrack does on ifdown and ifup.
func (d *daemon) reconcile(left, took []*link) error {
	ct, err := reconcile.Dial()
	if err != nil {
		return err
	}
	defer ct.Close()
	all, err := reconcile.Registered(d.h)
	if err != nil {
		return err
	}
	byKey := map[string]reconcile.Link{}
	for _, l := range all {
		byKey[l.Iface+" "+string(l.Family)] = l
	}
	var errs []error
	for _, l := range left {
		if rl, ok := byKey[l.reg.Key()]; ok {
			errs = append(errs, reconcile.Left(ct, rl))
		}
	}
	for _, l := range took {
		if rl, ok := byKey[l.reg.Key()]; ok {
			errs = append(errs, reconcile.Took(d.h, ct, rl, all))
		}
	}
	return errors.Join(errs...)
}

// setWithdrawn withdraws or restores l's main-table defaults, holding the
// registry lock so that no hook changes them meanwhile, and only if l is
// still the link registered.
func (d *daemon) setWithdrawn(l *link, withdraw bool) (n int, err error) {
	err = rundir.Locked("ifisp-watch "+l.reg.Key(), rundir.DefaultLockTimeout, func() error {
		n, err = d.setWithdrawnLocked(l, withdraw)
		return err
	})
	return n, err
}

// setWithdrawnLocked is setWithdrawn for a caller that holds the lock. The
// link's record says so too, so that a hook's re-run on the link keeps its
// defaults withdrawn (registry.Record); and the defaults are the record's
// as it is now, a re-run's.
func (d *daemon) setWithdrawnLocked(l *link, withdraw bool) (n int, err error) {
	cur, err := registry.Read(l.reg.Iface, l.reg.Family)
	if err != nil {
		return 0, err
	}
	if cur == nil || !cur.Since.Equal(l.reg.Since) {
		return 0, errGone
	}
	nl, err := d.h.LinkByName(l.reg.Iface)
	if err != nil {
		return 0, errGone
	}
	if withdraw {
		n, err = policy.RemoveDefaults(d.h, nl.Attrs().Index, l.reg.Family, cur.Defaults)
	} else {
		n, err = policy.AddDefaults(d.h, nl.Attrs().Index, l.reg.Family, cur.Defaults)
	}
	if err != nil {
		return n, err
	}
	if cur.Withdrawn != withdraw {
		cur.Withdrawn = withdraw
		if err := registry.Write(cur); err != nil {
			return n, err
		}
	}
	l.reg.Withdrawn = withdraw
	return n, nil
}

// withdrawAgain withdraws what came back of the withdrawn links' defaults
// (an ISP's router advertisement adds its default again, a DHCP client at
// its next lease) and moves the flows that meanwhile left by them, and
// returns what it did, one line per link. The caller holds the lock.
func (d *daemon) withdrawAgain() []string {
	var did []string
	var left []*link
	for _, key := range d.keys() {
		l := d.links[key]
		if !l.withdrawn {
			continue
		}
		n, err := d.setWithdrawnLocked(l, true)
		switch {
		case errors.Is(err, errGone):
		case err != nil:
			did = append(did, fmt.Sprintf("%s %s: withdrawing its defaults again: %v", l.reg.Iface, l.reg.Family, err))
		case n > 0:
			did = append(did, fmt.Sprintf("%s %s: %d main-table defaults came back while its ISP is down: withdrawn again", l.reg.Iface, l.reg.Family, n))
			left = append(left, l)
		}
	}
	if len(left) > 0 {
		if err := d.reconcile(left, nil); err != nil {
			did = append(did, fmt.Sprintf("conntrack: %v", err))
		}
	}
	return did
}

// shutdown restores what the monitor withdrew and removes its state file:
// a stopped monitor leaves the routes as ifupdown and the hooks made them.
func (d *daemon) shutdown() error {
	for _, l := range d.links {
		if l.withdrawn {
			l.health.set(Up) // not judged any more: what ifup made
		}
	}
	restored := d.apply()
	msg := "stopping"
	if len(restored) > 0 {
		msg += ": " + strings.Join(restored, "; ")
	}
	d.opt.Log.Print(msg)
	return errors.Join(removeStatus(), d.removeMetrics())
}

// keys returns the links' keys, sorted.
func (d *daemon) keys() []string {
	return slices.Sorted(maps.Keys(d.links))
}

// carrier reports whether an interface with these flags can pass packets.
func carrier(flags uint32) bool {
	return flags&unix.IFF_UP != 0 && flags&unix.IFF_LOWER_UP != 0
}

// targetsString lists what the link's probes go to.
func targetsString(reg registry.Link) string {
	if len(reg.Check) == 0 {
		return "gateway " + reg.Gateway.String()
	}
	s := make([]string, len(reg.Check))
	for i, a := range reg.Check {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
