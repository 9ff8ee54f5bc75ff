package lab

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteEvent is one IPv4 route the router's kernel added or removed.
type RouteEvent struct {
	At     time.Time // when the lab read the kernel's notification
	Table  int
	Dst    netip.Prefix // 0.0.0.0/0 for a default
	Gw     netip.Addr   // invalid for none
	Iface  string
	Metric int
	Added  bool // false: removed
}

// String is the event as `ip monitor route` would put it, roughly.
func (e RouteEvent) String() string {
	op := "del"
	if e.Added {
		op = "add"
	}
	via := ""
	if e.Gw.IsValid() {
		via = " via " + e.Gw.String()
	}
	return fmt.Sprintf("%s %s %s%s dev %s table %d metric %d", e.At.Format("15:04:05.000"), op, e.Dst, via, e.Iface, e.Table, e.Metric)
}

// RouteWatch records the router's IPv4 route changes as the kernel
// announces them (netlink, RTNLGRP_IPV4_ROUTE), every table.
type RouteWatch struct {
	mu     sync.Mutex
	events []RouteEvent
	err    error
}

// WatchRoutes starts recording the router's IPv4 route changes; it stops
// with the lab's removal.
func (l *Lab) WatchRoutes() *RouteWatch {
	l.t.Helper()
	ns, err := netns.GetFromName(l.Router)
	if err != nil {
		l.t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		l.t.Fatal(err)
	}
	w := &RouteWatch{}
	updates := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	err = netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{
		Namespace: &ns,
		ErrorCallback: func(err error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.err == nil {
				w.err = err
			}
		},
	})
	if err != nil {
		h.Close()
		ns.Close()
		l.t.Fatal(err)
	}
	names := map[int]string{}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for u := range updates {
			at := time.Now()
			if u.Family != netlink.FAMILY_V4 && u.Family != 0 {
				continue
			}
			name, ok := names[u.LinkIndex]
			if !ok {
				if link, err := h.LinkByIndex(u.LinkIndex); err == nil {
					name = link.Attrs().Name
					names[u.LinkIndex] = name
				} else {
					name = strconv.Itoa(u.LinkIndex)
				}
			}
			e := RouteEvent{At: at, Table: u.Table, Iface: name, Metric: u.Priority, Added: u.Type == unix.RTM_NEWROUTE,
				Dst: netip.MustParsePrefix("0.0.0.0/0")}
			if u.Dst != nil {
				if a, ok := netip.AddrFromSlice(u.Dst.IP); ok {
					ones, _ := u.Dst.Mask.Size()
					e.Dst = netip.PrefixFrom(a.Unmap(), ones)
				}
			}
			if a, ok := netip.AddrFromSlice(u.Gw); ok {
				e.Gw = a.Unmap()
			}
			w.mu.Lock()
			w.events = append(w.events, e)
			w.mu.Unlock()
		}
	}()
	l.t.Cleanup(func() {
		close(done)
		go func() {
			<-finished
			h.Close()
			ns.Close()
		}()
	})
	return w
}

// Events returns the changes recorded so far, oldest first.
func (w *RouteWatch) Events() []RouteEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events)
}

// Find returns the first event at or after from that satisfies ok.
func (w *RouteWatch) Find(from time.Time, ok func(RouteEvent) bool) (RouteEvent, bool) {
	for _, e := range w.Events() {
		if !e.At.Before(from) && ok(e) {
			return e, true
		}
	}
	return RouteEvent{}, false
}

// String lists the changes recorded so far, one a line, and the
// subscription's error, if any.
func (w *RouteWatch) String() string {
	var b strings.Builder
	for _, e := range w.Events() {
		b.WriteString(e.String() + "\n")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		fmt.Fprintf(&b, "(subscription: %v)\n", w.err)
	}
	return b.String()
}

// WaitRule waits until the router has an IPv4 rule from addr (a /32) to
// table, polling its rules by netlink, and returns when it first saw it;
// ok is false after timeout.
func (l *Lab) WaitRule(addr string, table int, timeout time.Duration) (time.Time, bool) {
	l.t.Helper()
	want := netip.MustParseAddr(addr)
	ns, err := netns.GetFromName(l.Router)
	if err != nil {
		l.t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer h.Close()
	for deadline := time.Now().Add(timeout); ; time.Sleep(2 * time.Millisecond) {
		rules, _ := h.RuleList(netlink.FAMILY_V4)
		for _, r := range rules {
			if r.Table != table || r.Src == nil {
				continue
			}
			ones, _ := r.Src.Mask.Size()
			if a, ok := netip.AddrFromSlice(r.Src.IP); ok && a.Unmap() == want && ones == 32 {
				return time.Now(), true
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
	}
}
