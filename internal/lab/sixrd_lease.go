package lab

import (
	"encoding/json"
	"os"
	"path/filepath"
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
