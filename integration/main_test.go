// Package integration runs ifisp's hooks with real ifupdown in the lab
// (package lab): real netlink, real iptables, real conntrack, real traffic
// between the lab's namespaces.
package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ifisp/ifisp/internal/lab"
)

// bin holds the binaries under test, built once for the package.
var bin string

func TestMain(m *testing.M) {
	lab.HelperMain()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests need root (network namespaces); run them as root, as .ci/run does")
		return 1
	}
	dir, err := os.MkdirTemp("", "ifisp-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := lab.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bin = dir
	return m.Run()
}

// binary returns the path of a built binary.
func binary(name string) string { return filepath.Join(bin, name) }

// noSpoofing fails the test if an ISP ever dropped a spoofed packet.
func noSpoofing(t *testing.T, l *lab.Lab) {
	t.Helper()
	if n := l.Spoofed(); n != 0 {
		t.Errorf("the ISPs dropped %d spoofed packets, want 0", n)
	}
}
