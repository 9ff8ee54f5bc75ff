package probe_test

import (
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/ifisp/ifisp/pkg/probe"
)

// listenIn opens a Pinger from src inside a fresh network namespace with
// only its loopback up, removed in cleanup.
func listenIn(t *testing.T, name string, srcs ...netip.Addr) []*probe.Pinger {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces, raw sockets)")
	}
	name += "-" + strconv.Itoa(os.Getpid()) // unique: tests may run side by side
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v\n%s", err, out)
	}
	// A socket belongs to the namespace of the thread that opens it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	var ps []*probe.Pinger
	for _, src := range srcs {
		p, err := probe.Listen(src, "lo")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		ps = append(ps, p)
	}
	return ps
}

// answers collects what Receive reports.
func answers(p *probe.Pinger) <-chan uint16 {
	ch := make(chan uint16, 16)
	go p.Receive(func(seq uint16) { ch <- seq })
	return ch
}

func TestPingerAnswers(t *testing.T) {
	for _, src := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		t.Run(src.String(), func(t *testing.T) {
			// Two Pingers on one address: each hears only its own answers.
			ps := listenIn(t, "ifisp-probe-"+map[bool]string{true: "6", false: "4"}[src.Is6()], src, src)
			mine, theirs := answers(ps[0]), answers(ps[1])
			if err := ps[0].Send(src, 7); err != nil {
				t.Fatal(err)
			}
			select {
			case seq := <-mine:
				if seq != 7 {
					t.Errorf("answer to seq %d, want 7", seq)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("no answer from the loopback in 2s")
			}
			select {
			case seq := <-theirs:
				t.Errorf("the other Pinger took an answer to seq %d", seq)
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
}

func TestPingerNoRoute(t *testing.T) {
	src := netip.MustParseAddr("127.0.0.1")
	p := listenIn(t, "ifisp-probe-noroute", src)[0]
	if err := p.Send(netip.MustParseAddr("192.0.2.1"), 1); err == nil {
		t.Error("a probe with no route out was sent without error")
	}
}
