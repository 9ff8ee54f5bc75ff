package integration

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ifisp/ifisp/pkg/lab"
)

// TestMakeInstall checks that `make install` gives a tree an operator could
// copy to /: static binaries in sbin, every hook of hooks/layout linked to
// them under its run-parts name, and the route protocol's name.
func TestMakeInstall(t *testing.T) {
	dest := t.TempDir()
	cmd := exec.Command("make", "install", "DESTDIR="+dest, "PREFIX=/usr")
	cmd.Dir = lab.Root()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	hooks, err := lab.Layout()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		link := filepath.Join(dest, "etc/network", h.Folder, h.Name)
		target, err := os.Readlink(link)
		if err != nil {
			t.Errorf("%s: %v", link, err)
			continue
		}
		if want := "/usr/sbin/" + h.Binary; target != want {
			t.Errorf("%s -> %s, want -> %s", link, target, want)
		}
		bin := filepath.Join(dest, target)
		if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s: not an installed executable (%v)", bin, err)
		}
		if dynamic(t, bin) {
			t.Errorf("%s needs a dynamic loader; hooks must be self-contained", bin)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dest, "etc/iproute2/rt_protos.d/ifisp.conf")); err != nil || string(b) == "" {
		t.Errorf("rt_protos.d/ifisp.conf: %v", err)
	}
}

// dynamic reports whether an ELF binary asks for a program interpreter.
func dynamic(t *testing.T, path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}
