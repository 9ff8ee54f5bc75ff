package watch

import (
	"bytes"
	"context"
	"log"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// lockedBuffer is a log destination safe for the prober and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestProbeListenFails runs a link's prober, inside a network namespace of
// its own, from an address the namespace does not have yet: the rounds
// are unanswered, and the log says once why, naming the link and the
// address. Once the address is there, the prober opens its socket, says
// so, and its rounds are answered.
func TestProbeListenFails(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a network namespace, raw sockets)")
	}
	name := "ifisp-watch-test-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v\n%s", err, out)
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()

	addr := netip.MustParseAddr("10.9.9.9")
	reg := registry.Link{Iface: "lo", Family: stanza.Inet, Address: addr, Check: []netip.Addr{addr},
		Interval: registry.Duration(20 * time.Millisecond), Down: 1, Up: 1}
	var logged lockedBuffer
	logger := log.New(&logged, "", 0)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan round)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The prober's socket belongs to this thread's namespace. The
		// thread never switches back: it ends, locked, with the goroutine.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			t.Error(err)
			return
		}
		probeLoop(ctx, reg, out, logger)
	}()
	defer func() { cancel(); <-done }()

	next := func() bool {
		t.Helper()
		select {
		case r := <-out:
			return r.ok
		case <-time.After(5 * time.Second):
			t.Fatal("no probe round in 5s")
		case <-done:
			t.Fatal("the prober ended")
		}
		return false
	}
	for i := range 5 {
		if next() {
			t.Fatalf("round %d answered, from an address the namespace does not have", i)
		}
	}
	want := "lo inet: no probes: opening an ICMP socket on 10.9.9.9: "
	if got := logged.String(); strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, want) || !strings.Contains(got, "(is 10.9.9.9 still on lo?)") {
		t.Errorf("log after 5 rounds without a socket:\n%swant one line starting %q", got, want)
	}

	if out, err := exec.Command("ip", "-n", name, "addr", "add", addr.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v\n%s", err, out)
	}
	answered := false
	for range 50 {
		if answered = next(); answered {
			break
		}
	}
	if !answered {
		t.Errorf("no round answered in 50 after the address came:\n%s", logged.String())
	}
	if got := logged.String(); !strings.Contains(got, "\nlo inet: probing from 10.9.9.9 again\n") {
		t.Errorf("log once the address came:\n%swant the line %q", got, "lo inet: probing from 10.9.9.9 again")
	}
}
