package lab

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// What a dhclient lease that moves a WAN does to the router, by hand, for
// tests of ifisp-lease with an `inet manual` WAN: the address moved as
// dhclient-script moves it, then ifisp's exit hook sourced (the test's
// own runner, as dhclient-script does), and the kernel's view of the 6rd
// tunnel that follows the WAN.

// DhclientExitHook writes ifisp's dhclient exit hook fragment
// (hooks/dhclient-exit-hook), its @SBINDIR@ made binDir, in a folder of
// the lab's own, and returns its path: the file dhclient-script sources
// from /etc/dhcp/dhclient-exit-hooks.d on a real system.
func (l *Lab) DhclientExitHook(binDir string) string {
	l.t.Helper()
	dir, err := os.MkdirTemp("", "ifisp-dhclient-hook-")
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { os.RemoveAll(dir) })
	hook := filepath.Join(dir, DHCPExitHook)
	l.WriteFile(hook, l.hookFile("dhclient-exit-hook", binDir))
	return hook
}

// MoveLease does to the router's iface what dhclient-script does for a
// lease with another address, before it runs its exit hooks: the old
// global addresses flushed (and with them the routes through them), the
// new address (with its prefix length, "203.0.113.3/24") added, and the
// default via the lease's router.
func (l *Lab) MoveLease(iface, addr, router string) {
	l.t.Helper()
	l.Must(l.Router, "sh", "-c", "ip addr flush dev "+iface+" scope global && ip addr add "+addr+" dev "+iface+
		" && ip route add default via "+router+" dev "+iface)
}

// TunnelLocal returns the local IPv4 address of the router's tunnel iface
// as the kernel has it (`ip -d link`: the address its packets leave
// from), "" when it has none or "any".
func (l *Lab) TunnelLocal(iface string) string {
	l.t.Helper()
	out := l.Must(l.Router, "ip", "-j", "-d", "link", "show", "dev", iface)
	var links []struct {
		LinkInfo struct {
			Kind string `json:"info_kind"`
			Data struct {
				Local string `json:"local"`
			} `json:"info_data"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		l.t.Fatalf("ip -j -d link show dev %s: %v\n%s", iface, err, out)
	}
	if local := links[0].LinkInfo.Data.Local; local != "any" {
		return local
	}
	return ""
}

// WatchAddrChanges is WatchAddrs without the addresses there already: it
// asks the kernel for nothing, it only listens. WatchAddrs's dump request
// goes out on its subscribed socket, and vishvananda/netlink sends a
// request to the address that socket is bound to, its groups included:
// the kernel multicasts the request to every listener of the router's
// IPv4 address events, ifisp-watch among them, which takes a message from
// a process for a netlink failure and exits. With the monitor running,
// watch with this one.
func (l *Lab) WatchAddrChanges() *AddrWatch {
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
	w := &AddrWatch{}
	updates := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	err = netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
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
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		names := map[int]string{}
		for u := range updates {
			at := time.Now()
			name, ok := names[u.LinkIndex]
			if !ok {
				name = strconv.Itoa(u.LinkIndex)
				if link, err := h.LinkByIndex(u.LinkIndex); err == nil {
					name = link.Attrs().Name
					names[u.LinkIndex] = name
				}
			}
			addr, _ := netip.AddrFromSlice(u.LinkAddress.IP)
			ones, _ := u.LinkAddress.Mask.Size()
			w.mu.Lock()
			w.events = append(w.events, AddrEvent{At: at, Iface: name, Addr: netip.PrefixFrom(addr.Unmap(), ones), Added: u.NewAddr})
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
