package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ifisp/ifisp/internal/lab"
)

// TestExample brings the README's example site up and down as written:
// examples/two-isp.interfaces in the lab, whose addresses it shares.
func TestExample(t *testing.T) {
	example, err := os.ReadFile(filepath.Join(lab.Root(), "examples/two-isp.interfaces"))
	if err != nil {
		t.Fatal(err)
	}
	l := lab.New(t)
	l.Install(bin)
	l.Interfaces(string(example))
	l.MustIfup("wana", "wanb")
	if got := carrier(t, l); got != "ispb" {
		t.Errorf("LAN traffic leaves by %s, want ispb (metric 0)", got)
	}
	for _, src := range []string{l.A.Router, l.B.Router} {
		if got := l.Ping(l.Router, lab.Internet, 3, "-I", src); got != 3 {
			t.Errorf("router from %s: %d of 3 answered", src, got)
		}
	}
	if got := l.Ping(l.Router, lab.Internet6, 3, "-I", l.A.Router6); got != 3 {
		t.Errorf("router from %s: %d of 3 answered", l.A.Router6, got)
	}
	rules := l.Must(l.Router, "ip", "-6", "rule")
	if !strings.Contains(rules, "10100:\tfrom 2001:db8:b100::/56 lookup ispb proto ifisp") {
		t.Errorf("no rule for wanb's delegated prefix:\n%s", rules)
	}
	noSpoofing(t, l)
	l.MustIfdown("wana", "wanb")
	if out := routingState(l); strings.Contains(out, "proto ifisp") {
		t.Errorf("ifisp state left after ifdown:\n%s", out)
	}
}
