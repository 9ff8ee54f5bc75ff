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
