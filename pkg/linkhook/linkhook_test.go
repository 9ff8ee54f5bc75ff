package linkhook

import (
	"testing"

	"github.com/ifisp/ifisp/hooks"
)

// Every hook of hooks/layout is a binary Run knows, and every binary Run
// knows is in the layout: otherwise ifisp-lease would skip a step of ifup.
func TestByBinaryIsTheLayout(t *testing.T) {
	for b := range hooks.Binaries() {
		if ByBinary[b] == nil {
			t.Errorf("hooks/layout runs %s, which ByBinary lacks", b)
		}
	}
	for b := range ByBinary {
		if !hooks.Binaries()[b] {
			t.Errorf("ByBinary has %s, which hooks/layout never runs", b)
		}
	}
	layout, err := hooks.Layout()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range layout {
		if phases[h.Folder] == "" {
			t.Errorf("hooks/layout puts %s in %s, which Run does not know", h.Binary, h.Folder)
		}
	}
}
