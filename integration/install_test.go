package integration

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ifisp/ifisp/internal/lab"
)

// TestMakeInstall checks that `make install` gives a tree an operator could
// copy to /: static binaries in sbin, every hook of hooks/layout linked to
// them under its run-parts name, the route protocol's name, ifisp-watch's
// unit starting the installed binary, the man pages (a page for every
// binary) and the examples. A second install into other folders checks
// that the unit follows SBINDIR and that systemd accepts it.
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
	unit(t, filepath.Join(dest, "usr/lib/systemd/system/ifisp-watch.service"), "/usr/sbin/ifisp-watch")
	leaseHooks(t, dest, "/usr/sbin")
	manPages(t, filepath.Join(dest, "usr/share/man"), hooks)
	for _, f := range []string{"README.md", "examples/two-isp.interfaces", "examples/6rd.interfaces"} {
		if _, err := os.Stat(filepath.Join(dest, "usr/share/doc/ifisp", f)); err != nil {
			t.Errorf("the docs: %v", err)
		}
	}

	// systemd-analyze verify checks that ExecStart's binary exists, on the
	// real root (--root= wants a whole system: sysinit.target, /bin/kill),
	// so this tree is installed where its paths are true as they stand.
	// PREFIX too: nothing of it may land in the host's /usr.
	other := t.TempDir()
	cmd = exec.Command("make", "install", "PREFIX="+other+"/usr", "SBINDIR="+other+"/sbin", "SYSCONFDIR="+other+"/etc", "SYSTEMDUNITDIR="+other+"/units")
	cmd.Dir = lab.Root()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install SBINDIR=%s/sbin: %v\n%s", other, err, out)
	}
	path := filepath.Join(other, "units/ifisp-watch.service")
	unit(t, path, other+"/sbin/ifisp-watch")
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("systemd-analyze not found, so %s cannot be verified: install it (Debian: apt-get install systemd)", path)
	}
	// It works offline, without systemd as PID 1; it exits 0 even for an
	// unknown key, so any output is a failure. --man=no: the unit's
	// Documentation= page is not installed on this machine (the package
	// test checks it in a Debian root).
	if out, err := exec.Command("systemd-analyze", "verify", "--man=no", path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", path, err, out)
	}
}

// manPages checks the man pages installed below dir: roff, not scdoc, for
// every binary under cmd/ a page of its name (each hook binary's a link to
// ifisp-hooks(8)), and ifisp-interfaces(5).
func manPages(t *testing.T, dir string, hooks []lab.Hook) {
	t.Helper()
	cmds, err := os.ReadDir(filepath.Join(lab.Root(), "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	pages := []string{"man5/ifisp-interfaces.5"}
	for _, c := range cmds {
		pages = append(pages, "man8/"+c.Name()+".8")
	}
	for _, page := range pages {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Errorf("man page: %v", err)
			continue
		}
		if !strings.Contains(string(b), "\n.TH ") {
			t.Errorf("%s: not roff (no .TH line)", page)
		}
	}
	for _, h := range hooks {
		link := filepath.Join(dir, "man8", h.Binary+".8")
		if target, err := os.Readlink(link); err != nil || target != "ifisp-hooks.8" {
			t.Errorf("%s -> %q (%v), want -> ifisp-hooks.8", link, target, err)
		}
	}
}

// leaseHooks checks the hooks of dhclient and pppd under dest: shell the
// shell accepts, each running the installed ifisp-lease with its client's
// verb, the ppp scripts executable (run-parts runs them) and the dhclient
// fragment not (dhclient-script sources it).
func leaseHooks(t *testing.T, dest, sbin string) {
	t.Helper()
	for _, h := range []struct {
		path, verb string
		exec       bool
	}{
		{"etc/dhcp/dhclient-exit-hooks.d/ifisp", "dhclient", false},
		{"etc/ppp/ip-up.d/ifisp", "ppp-up", true},
		{"etc/ppp/ip-down.d/ifisp", "ppp-down", true},
	} {
		path := filepath.Join(dest, h.path)
		fi, err := os.Stat(path)
		if err != nil {
			t.Error(err)
			continue
		}
		if got := fi.Mode()&0o111 != 0; got != h.exec {
			t.Errorf("%s: mode %v, executable should be %v", path, fi.Mode(), h.exec)
		}
		b, _ := os.ReadFile(path)
		if want := sbin + "/ifisp-lease " + h.verb; !strings.Contains(string(b), want) {
			t.Errorf("%s does not run %q:\n%s", path, want, b)
		}
		if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v\n%s", path, err, out)
		}
	}
}

// TestMakeInstallScripts checks `make install HOOKS=scripts`, the Debian
// package's hooks: in each if-*.d folder a script (a conffile there) that
// runs the binary under its run-parts name, passes its arguments on, does
// nothing for a stanza that is not ifisp's, and nothing at all once the
// binary is gone (the package removed, its conffiles left).
func TestMakeInstallScripts(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("make", "install", "HOOKS=scripts", "PREFIX="+dir+"/usr", "SBINDIR="+dir+"/sbin", "SYSCONFDIR="+dir+"/etc", "SYSTEMDUNITDIR="+dir+"/units")
	cmd.Dir = lab.Root()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install HOOKS=scripts: %v\n%s", err, out)
	}
	hooks, err := lab.Layout()
	if err != nil {
		t.Fatal(err)
	}
	run := func(script string, env []string, args ...string) (string, error) {
		cmd := exec.Command(script, args...)
		cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "IFISP_RUN_DIR=" + t.TempDir()}, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// What ifupdown exports for `ifup lo`.
	lo := []string{"IFACE=lo", "LOGICAL=lo", "ADDRFAM=inet", "METHOD=loopback", "MODE=start", "PHASE=post-up", "VERBOSITY=0"}
	for _, h := range hooks {
		script := filepath.Join(dir, "etc/network", h.Folder, h.Name)
		fi, err := os.Lstat(script)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: want a 0755 script (%v, %v)", script, fi.Mode(), err)
			continue
		}
		if out, err := run(script, nil, "--help"); err != nil || !strings.HasPrefix(out, "usage: "+h.Binary+" ") {
			t.Errorf("%s --help: %v\n%s", script, err, out)
		}
		if out, err := run(script, lo); err != nil || out != "" {
			t.Errorf("%s for lo: %v %q, want nothing done", script, err, out)
		}
	}
	for _, h := range hooks {
		if err := os.Remove(filepath.Join(dir, "sbin", h.Binary)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	for _, h := range hooks {
		script := filepath.Join(dir, "etc/network", h.Folder, h.Name)
		if out, err := run(script, nil, "--no-such-option"); err != nil || out != "" {
			t.Errorf("%s without its binary: %v %q, want exit 0 and nothing said", script, err, out)
		}
	}
}

// unit checks an installed ifisp-watch.service: mode 0644, ExecStart the
// binary wanted.
func unit(t *testing.T, path, binary string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("the unit: %v", err)
		return
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: mode %v, want 0644", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "\nExecStart=" + binary + "\n"; !strings.Contains(string(b), want) {
		t.Errorf("%s: no line %q in\n%s", path, strings.TrimSpace(want), b)
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

// TestLayoutOrder checks hooks/layout against what docs/design.md's order
// needs, as run-parts will see it: valid names, and in every folder the route
// before SNAT before the conntrack reconcile, which comes last of all.
func TestLayoutOrder(t *testing.T) {
	hooks, err := lab.Layout()
	if err != nil {
		t.Fatal(err)
	}
	valid := regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	rank := map[string]int{"ifisp-6rd": 0, "ifisp-route": 1, "ifisp-snat": 2, "ifisp-conntrack": 3}
	byFolder := map[string][]lab.Hook{}
	for _, h := range hooks {
		if !valid.MatchString(h.Name) {
			t.Errorf("%s/%s: run-parts would not run that name", h.Folder, h.Name)
		}
		byFolder[h.Folder] = append(byFolder[h.Folder], h)
	}
	for folder, hs := range byFolder {
		sort.Slice(hs, func(i, j int) bool { return hs[i].Name < hs[j].Name }) // C locale
		for i := 1; i < len(hs); i++ {
			if rank[hs[i-1].Binary] > rank[hs[i].Binary] {
				t.Errorf("%s: %s runs before %s", folder, hs[i-1].Name, hs[i].Name)
			}
		}
		if last := hs[len(hs)-1]; slices.ContainsFunc(hs, func(h lab.Hook) bool { return h.Binary == "ifisp-conntrack" }) &&
			(last.Binary != "ifisp-conntrack" || last.Name < "zz") {
			t.Errorf("%s: the reconcile must sort after every other hook, got %s last", folder, last.Name)
		}
	}
}
