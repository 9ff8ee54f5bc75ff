package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetWatch records the router's addresses, routes (IPv4 and IPv6, every
// table) and policy rules as its kernel announces their changes by
// netlink, from what there was when it started on, each with the time the
// lab read it. It only listens: what there was it lists with a handle of
// its own, because a dump request sent on a subscribed socket goes to the
// socket's groups too, and the kernel multicasts it to every listener in
// the router, ifisp-watch among them (see SubscribeWithDump). It stops
// with the lab's removal.
type NetWatch struct {
	mu     sync.Mutex
	events []netEvent
	err    error
}

// netEvent is an AddrEvent, a RouteEvent or a RuleEvent.
type netEvent interface {
	at() time.Time
	String() string
}

// AddrEvent is one address the router's kernel added or removed.
type AddrEvent struct {
	At    time.Time // when the lab read the kernel's notification, or listed the address at the start
	Iface string
	Addr  netip.Prefix
	Added bool // false: removed
}

// RouteEvent is one route the router's kernel added or removed.
type RouteEvent struct {
	At     time.Time // as AddrEvent's
	Table  int
	Dst    netip.Prefix // 0.0.0.0/0 or ::/0 for a default
	Gw     netip.Addr   // invalid for none
	Iface  string
	Metric int
	Added  bool // false: removed
}

// RuleEvent is one policy rule the router's kernel added or removed.
type RuleEvent struct {
	At    time.Time    // as AddrEvent's
	Src   netip.Prefix // invalid for a rule from all
	Table int
	Added bool // false: removed
}

func (e AddrEvent) at() time.Time  { return e.At }
func (e RouteEvent) at() time.Time { return e.At }
func (e RuleEvent) at() time.Time  { return e.At }

// String is the event as `ip monitor` would put it, roughly.
func (e AddrEvent) String() string {
	return fmt.Sprintf("%s %s addr %s dev %s", e.At.Format("15:04:05.000"), op(e.Added), e.Addr, e.Iface)
}

// String is the event as `ip monitor` would put it, roughly.
func (e RouteEvent) String() string {
	via := ""
	if e.Gw.IsValid() {
		via = " via " + e.Gw.String()
	}
	return fmt.Sprintf("%s %s route %s%s dev %s table %d metric %d", e.At.Format("15:04:05.000"), op(e.Added), e.Dst, via, e.Iface, e.Table, e.Metric)
}

// String is the event as `ip monitor` would put it, roughly.
func (e RuleEvent) String() string {
	from := "all"
	if e.Src.IsValid() {
		from = e.Src.String()
	}
	return fmt.Sprintf("%s %s rule from %s lookup %d", e.At.Format("15:04:05.000"), op(e.Added), from, e.Table)
}

func op(added bool) string {
	if added {
		return "add"
	}
	return "del"
}

// WatchNet starts a NetWatch of the router.
func (l *Lab) WatchNet() *NetWatch {
	l.t.Helper()
	ns := l.routerNS()
	defer ns.Close() // the handle's and the subscriptions' sockets are made in it, and keep it
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	w := &NetWatch{}
	done := make(chan struct{})
	failed := func(err error) {
		select {
		case <-done: // the subscriptions' sockets closed at the end
		default:
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.err == nil {
				w.err = err
			}
		}
	}
	// Subscribed before what there is is listed: no change falls between.
	addrs := make(chan netlink.AddrUpdate, 256)
	routes := make(chan netlink.RouteUpdate, 1024)
	rules := make(chan RuleEvent, 256)
	err = netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: failed})
	if err == nil {
		err = netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: failed})
	}
	if err == nil {
		err = subscribeRules(ns, rules, done, failed)
	}
	names := map[int]string{}
	name := func(index int) string {
		if n, ok := names[index]; ok {
			return n
		}
		link, err := h.LinkByIndex(index)
		if err != nil {
			return strconv.Itoa(index) // gone already
		}
		names[index] = link.Attrs().Name
		return names[index]
	}
	if err == nil {
		w.events, err = listNet(h, name)
	}
	if err != nil {
		close(done)
		h.Close()
		l.t.Fatal(err)
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for addrs != nil || routes != nil || rules != nil {
			var e netEvent
			select {
			case u, ok := <-addrs:
				if !ok {
					addrs = nil
					continue
				}
				e = AddrEvent{At: time.Now(), Iface: name(u.LinkIndex), Addr: prefix(&u.LinkAddress), Added: u.NewAddr}
			case u, ok := <-routes:
				if !ok {
					routes = nil
					continue
				}
				e = routeEvent(time.Now(), u.Route, u.Type == unix.RTM_NEWROUTE, name)
			case r, ok := <-rules:
				if !ok {
					rules = nil
					continue
				}
				e = r
			}
			w.mu.Lock()
			w.events = append(w.events, e)
			w.mu.Unlock()
		}
	}()
	l.t.Cleanup(func() {
		close(done)
		// The subscriptions close their channels once their sockets
		// are closed; the handle names the links until then.
		go func() {
			<-finished
			h.Close()
		}()
	})
	return w
}

// routerNS opens the router's network namespace, for netlink; the caller
// closes it.
func (l *Lab) routerNS() netns.NsHandle {
	l.t.Helper()
	ns, err := netns.GetFromName(l.Router)
	if err != nil {
		l.t.Fatal(err)
	}
	return ns
}

// listNet lists the router's addresses, routes of every table and rules,
// as events that added them now.
func listNet(h *netlink.Handle, name func(int) string) ([]netEvent, error) {
	at := time.Now()
	var events []netEvent
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		events = append(events, AddrEvent{At: at, Iface: name(a.LinkIndex), Addr: prefix(a.IPNet), Added: true})
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			events = append(events, routeEvent(at, r, true, name))
		}
		rules, err := h.RuleList(family)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			events = append(events, RuleEvent{At: at, Src: prefix(r.Src), Table: r.Table, Added: true})
		}
	}
	return events, nil
}

// subscribeRules sends the router's rule notifications (IPv4 and IPv6)
// down ch, as RuleEvents, until done: netlink's AddrSubscribe for rules,
// which the package has not.
func subscribeRules(ns netns.NsHandle, ch chan<- RuleEvent, done <-chan struct{}, failed func(error)) error {
	s, err := nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_RULE)
	if err != nil {
		return err
	}
	go func() {
		<-done
		s.Close()
	}()
	go func() {
		defer close(ch)
		for {
			msgs, from, err := s.Receive()
			if err != nil {
				failed(fmt.Errorf("rule notifications: %w", err))
				return
			}
			if from.Pid != nl.PidKernel {
				failed(fmt.Errorf("rule notifications: a message from process %d, not the kernel", from.Pid))
				continue
			}
			for _, m := range msgs {
				if m.Header.Type != unix.RTM_NEWRULE && m.Header.Type != unix.RTM_DELRULE {
					continue
				}
				e, err := parseRule(m.Data)
				if err != nil {
					failed(fmt.Errorf("rule notifications: %w", err))
					continue
				}
				e.At, e.Added = time.Now(), m.Header.Type == unix.RTM_NEWRULE
				ch <- e
			}
		}
	}()
	return nil
}

// parseRule reads a rule message's source and table, as netlink's
// RuleList does.
func parseRule(b []byte) (RuleEvent, error) {
	msg := nl.DeserializeRtMsg(b)
	attrs, err := nl.ParseRouteAttr(b[msg.Len():])
	if err != nil {
		return RuleEvent{}, err
	}
	e := RuleEvent{Table: int(msg.Table)}
	for _, a := range attrs {
		switch a.Attr.Type {
		case nl.FRA_SRC:
			e.Src = prefix(&net.IPNet{IP: a.Value, Mask: net.CIDRMask(int(msg.Src_len), 8*len(a.Value))})
		case nl.FRA_TABLE:
			if len(a.Value) >= 4 {
				e.Table = int(binary.NativeEndian.Uint32(a.Value))
			}
		}
	}
	return e, nil
}

// routeEvent is route r as a RouteEvent at at.
func routeEvent(at time.Time, r netlink.Route, added bool, name func(int) string) RouteEvent {
	e := RouteEvent{At: at, Table: r.Table, Iface: name(r.LinkIndex), Metric: r.Priority, Added: added, Dst: prefix(r.Dst)}
	if r.Dst == nil {
		e.Dst = netip.MustParsePrefix("0.0.0.0/0")
		if r.Family == netlink.FAMILY_V6 {
			e.Dst = netip.MustParsePrefix("::/0")
		}
	}
	if a, ok := netip.AddrFromSlice(r.Gw); ok {
		e.Gw = a.Unmap()
	}
	return e
}

// prefix is n as a netip.Prefix; invalid for nil.
func prefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// find returns the first event of w of type E at or after from that
// satisfies ok.
func find[E netEvent](w *NetWatch, from time.Time, ok func(E) bool) (E, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e, is := e.(E); is && !e.at().Before(from) && ok(e) {
			return e, true
		}
	}
	var none E
	return none, false
}

// wait is find until there is one, or timeout has passed.
func wait[E netEvent](w *NetWatch, from time.Time, timeout time.Duration, ok func(E) bool) (E, bool) {
	for deadline := time.Now().Add(timeout); ; time.Sleep(time.Millisecond) {
		if e, found := find(w, from, ok); found || time.Now().After(deadline) {
			return e, found
		}
	}
}

// WaitAddr waits until the kernel added (added true) or removed addr on
// iface at or after from, and returns that event; ok is false after
// timeout. addr is an address ("203.0.113.3") or a prefix
// ("203.0.113.3/24").
func (w *NetWatch) WaitAddr(from time.Time, iface, addr string, added bool, timeout time.Duration) (AddrEvent, bool) {
	p, err := netip.ParsePrefix(addr)
	return wait(w, from, timeout, func(e AddrEvent) bool {
		if e.Iface != iface || e.Added != added {
			return false
		}
		if err == nil {
			return e.Addr == p
		}
		return e.Addr.Addr().String() == addr
	})
}

// FindRoute returns the first route event at or after from that
// satisfies ok.
func (w *NetWatch) FindRoute(from time.Time, ok func(RouteEvent) bool) (RouteEvent, bool) {
	return find(w, from, ok)
}

// WaitRule waits until the kernel added (added true) or removed the rule
// from src to table at or after from, and returns that event; ok is false
// after timeout.
func (w *NetWatch) WaitRule(from time.Time, src netip.Prefix, table int, added bool, timeout time.Duration) (RuleEvent, bool) {
	return wait(w, from, timeout, func(e RuleEvent) bool { return e.Src == src && e.Table == table && e.Added == added })
}

// HasRule reports whether the rule from src to table is there now, as
// the last event of it says.
func (w *NetWatch) HasRule(src netip.Prefix, table int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	there := false
	for _, e := range w.events {
		if r, ok := e.(RuleEvent); ok && r.Src == src && r.Table == table {
			there = r.Added
		}
	}
	return there
}

// Err returns the first error a subscription reported, if any: one that
// ended it, or a message it skipped (another process's request, which the
// kernel multicast to its groups).
func (w *NetWatch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// String lists the events so far, one a line, and the first error.
func (w *NetWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, e := range w.events {
		b.WriteString(e.String() + "\n")
	}
	if w.err != nil {
		fmt.Fprintf(&b, "(netlink: %v)\n", w.err)
	}
	return b.String()
}

// SubscribeWithDump does what another root process in the router's
// namespace does that subscribes to its address events with a dump of
// the addresses there are (vishvananda/netlink's AddrSubscribeWithOptions
// with ListExisting, as `ip monitor` tools do): its dump request goes out
// on the subscribed socket, and the kernel multicasts it to every
// listener of the router's address events. The subscription lasts until
// the lab's removal; what it receives is dropped.
func (l *Lab) SubscribeWithDump() {
	l.t.Helper()
	ns := l.routerNS()
	defer ns.Close()
	updates := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{Namespace: &ns, ListExisting: true})
	if err != nil {
		l.t.Fatal(err)
	}
	go func() {
		for range updates {
		}
	}()
	l.t.Cleanup(func() { close(done) })
}
