package integration

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
)

// answered waits (timeout at most) for the LAN host's first new TCP
// connection, started at or after from, that the internet host saw coming
// from prefix p, and returns it.
func answered(t testing.TB, d *lab.Dialer, from time.Time, p netip.Prefix, timeout time.Duration, what string) lab.Dial {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		if dl, ok := d.FirstFrom(from, p); ok {
			return dl
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no new connection from %s answered within %s; answered since: %+v", what, p, timeout, d.Answered(from, time.Now()))
		}
	}
}

// settle waits until n more LAN connections, started one after another
// from from on, are answered from p, each within timeout, and returns
// just after the last one started: the LAN is on p for good.
func settle(t testing.TB, d *lab.Dialer, from time.Time, p netip.Prefix, n int, timeout time.Duration) time.Time {
	t.Helper()
	for range n {
		from = answered(t, d, from, p, timeout, "while settling").Start.Add(time.Nanosecond)
	}
	return from
}

// host is the prefix of addr alone: answered from host(addr) is answered
// from addr.
func host(addr string) netip.Prefix {
	a := netip.MustParseAddr(addr)
	return netip.PrefixFrom(a, a.BitLen())
}
