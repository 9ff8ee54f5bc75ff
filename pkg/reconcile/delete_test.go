package reconcile

import (
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestDeleterKernel creates entries in a namespace of its own and deletes
// them in batches: exactly the ones asked for go, and one that ended
// meanwhile counts as gone.
func TestDeleterKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces)")
	}
	const name = "ifisp-reconcile-deleter"
	exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	cfg := &netlink.Config{NetNS: int(ns)}
	ct, err := conntrack.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()

	const n = 1500 // three batches
	for i := range n {
		f := conntrack.NewFlow(unix.IPPROTO_UDP, 0, netip.MustParseAddr("10.1.0.10"), netip.MustParseAddr("192.0.2.100"),
			uint16(20000+i), 7000, 120, 0)
		if err := ct.Create(f); err != nil {
			t.Fatalf("creating entry %d: %v", i, err)
		}
	}
	flows, err := ct.Dump(nil)
	if err != nil || len(flows) != n {
		t.Fatalf("dump: %d entries, %v", len(flows), err)
	}
	del, err := DialDeleter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer del.Close()

	// The first entry ends before the batch runs.
	if err := ct.Delete(flows[0]); err != nil {
		t.Fatal(err)
	}
	deleted, err := del.Delete(flows[:n-100])
	if err != nil || deleted != n-100 {
		t.Errorf("deleted %d (%v), want %d", deleted, err, n-100)
	}
	left, err := ct.Dump(nil)
	if err != nil || len(left) != 100 {
		t.Errorf("left %d entries (%v), want the 100 not asked for", len(left), err)
	}
	asked := map[uint32]bool{}
	for _, f := range flows[:n-100] {
		asked[f.ID] = true
	}
	for _, f := range left {
		if asked[f.ID] {
			t.Errorf("entry %d is left, but was asked to go", f.ID)
		}
	}
}
