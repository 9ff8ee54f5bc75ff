//go:build debtest

// The Debian package (make deb) in a clean Debian 12 root: `make test-deb`.
// It needs mmdebstrap and Debian's mirror for the base root the first time
// (then cached in ~/.cache/ifisp-deb), dpkg-deb, unshare and chroot; every
// command in the root runs in a network namespace of its own, so nothing
// the package does there can reach the host's network.

package integration

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
)

// debSuite is the Debian release the package is for.
const debSuite = "bookworm"

// debFile returns the one package make deb built for arch.
func debFile(t *testing.T, arch string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(lab.Root(), "bin/deb", "ifisp_*_"+arch+".deb"))
	if len(files) != 1 {
		t.Fatalf("want one bin/deb/ifisp_*_%s.deb (make deb), found %v", arch, files)
	}
	return files[0]
}

// debEntry is one file of a package's data archive.
type debEntry struct {
	mode fs.FileMode // type and permissions
	link string      // a symlink's target
}

// debContents lists a package's files by absolute path, and returns its
// conffiles.
func debContents(t *testing.T, deb string) (map[string]debEntry, []string) {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "--fsys-tarfile", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile %s: %v", deb, err)
	}
	files := map[string]debEntry{}
	r := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := path.Clean("/" + h.Name)
		if name == "/" {
			continue
		}
		files[name] = debEntry{mode: h.FileInfo().Mode(), link: h.Linkname}
	}
	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "--control", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --control: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "conffiles"))
	return files, strings.Fields(string(b))
}

// debField returns a control field of a package.
func debField(t *testing.T, deb, field string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "--field", deb, field).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --field %s %s: %v", deb, field, err)
	}
	return strings.TrimSpace(string(out))
}

// binaries lists the binaries under cmd/.
func binaries(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(lab.Root(), "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}

// wantedFiles are the files every package must hold, by path, with the
// kind of file each must be: each binary, each hook of hooks/layout as a
// conffile script, the unit, the route protocol's name, a man page for
// each binary, the docs and the examples.
func wantedFiles(t *testing.T) map[string]fs.FileMode {
	t.Helper()
	want := map[string]fs.FileMode{
		"/usr/lib/systemd/system/ifisp-watch.service": 0o644,
		"/etc/iproute2/rt_protos.d/ifisp.conf":        0o644,
		"/usr/share/man/man5/ifisp-interfaces.5.gz":   0o644,
		"/usr/share/doc/ifisp/copyright":              0o644,
		"/usr/share/doc/ifisp/changelog.gz":           0o644,
		"/usr/share/doc/ifisp/README.md":              0o644,
		"/etc/ifisp/notify.d":                         fs.ModeDir | 0o755,
		"/etc/dhcp/dhclient-exit-hooks.d/ifisp":       0o644, // sourced, not run
		"/etc/ppp/ip-up.d/ifisp":                      0o755,
		"/etc/ppp/ip-down.d/ifisp":                    0o755,
	}
	for _, b := range binaries(t) {
		want["/usr/sbin/"+b] = 0o755
	}
	hooks, err := lab.Layout()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		want["/etc/network/"+h.Folder+"/"+h.Name] = 0o755
		want["/usr/share/man/man8/"+h.Binary+".8.gz"] = fs.ModeSymlink | 0o777
	}
	for _, b := range binaries(t) {
		if _, ok := want["/usr/share/man/man8/"+b+".8.gz"]; !ok {
			want["/usr/share/man/man8/"+b+".8.gz"] = 0o644
		}
	}
	examples, _ := filepath.Glob(filepath.Join(lab.Root(), "examples/*"))
	for _, e := range examples {
		want["/usr/share/doc/ifisp/examples/"+filepath.Base(e)] = 0o644
	}
	return want
}

// TestDebContents checks both packages without installing them: the
// files policy and hooks/layout put where they belong, every file in /etc
// a conffile, binaries static and of the package's architecture, and the
// same files in both.
func TestDebContents(t *testing.T) {
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	var lists [][]string
	for _, arch := range []string{"amd64", "arm64"} {
		deb := debFile(t, arch)
		if got := debField(t, deb, "Architecture"); got != arch {
			t.Errorf("%s: Architecture %s", deb, got)
		}
		files, conffiles := debContents(t, deb)
		for p, mode := range wantedFiles(t) {
			if e, ok := files[p]; !ok || e.mode != mode {
				t.Errorf("%s: %s is %v (in the package: %v), want %v", filepath.Base(deb), p, e.mode, ok, mode)
			}
		}
		var etc []string
		for p, e := range files {
			if strings.HasPrefix(p, "/etc/") && e.mode.IsRegular() {
				etc = append(etc, p)
			}
			if e.mode&fs.ModeSymlink != 0 {
				if _, ok := files[path.Join(path.Dir(p), e.link)]; !ok {
					t.Errorf("%s: %s -> %s, which the package does not hold", filepath.Base(deb), p, e.link)
				}
			}
		}
		sort.Strings(etc)
		sort.Strings(conffiles)
		if !slices.Equal(etc, conffiles) {
			t.Errorf("%s: conffiles %v, want every file in /etc: %v", filepath.Base(deb), conffiles, etc)
		}

		dir := t.TempDir()
		if out, err := exec.Command("dpkg-deb", "--extract", deb, dir).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb --extract: %v\n%s", err, out)
		}
		for _, b := range binaries(t) {
			bin := filepath.Join(dir, "usr/sbin", b)
			f, err := elf.Open(bin)
			if err != nil {
				t.Errorf("%s: %v", bin, err)
				continue
			}
			if f.Machine != machines[arch] {
				t.Errorf("%s %s: %v, want %v", arch, b, f.Machine, machines[arch])
			}
			f.Close()
			if dynamic(t, bin) {
				t.Errorf("%s %s: dynamically linked", arch, b)
			}
		}
		var list []string
		for p, e := range files {
			list = append(list, fmt.Sprintf("%s %v", p, e.mode))
		}
		sort.Strings(list)
		lists = append(lists, list)
	}
	if !slices.Equal(lists[0], lists[1]) {
		t.Errorf("the amd64 and arm64 packages hold different files:\n%s\n%s", strings.Join(lists[0], "\n"), strings.Join(lists[1], "\n"))
	}
}

// debRoot is an unpacked Debian root.
type debRoot struct {
	t    *testing.T
	dir  string
	tmp  string // its /tmp, from the host
	logs []string
}

// run runs a command in the root, in a network namespace of its own, with
// a clean environment plus env; it returns the combined output.
func (r *debRoot) run(env []string, args ...string) (string, error) {
	cmd := exec.Command("unshare", append([]string{"--net", "--", "chroot", r.dir}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "TERM=dumb"}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs a command in the root and fails the test if it fails.
func (r *debRoot) must(args ...string) string {
	r.t.Helper()
	out, err := r.run(nil, args...)
	if err != nil {
		r.t.Fatalf("in the root: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// systemctl returns what the maintainer scripts asked of systemd since the
// last call, one call a line (see systemctlShim).
func (r *debRoot) systemctl() []string {
	r.t.Helper()
	log := filepath.Join(r.tmp, "systemctl.log")
	b, err := os.ReadFile(log)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.t.Fatal(err)
	}
	os.Remove(log)
	return strings.FieldsFunc(string(b), func(c rune) bool { return c == '\n' })
}

// systemctlShim stands in for systemctl in the root, where no systemd
// runs: with /run/systemd/system present the maintainer scripts act as on
// a booted system, and the shim writes down each request. What works
// offline goes to the real systemctl, on the root's files (--root=/):
// enabling through presets, and is-enabled (deb-systemd-invoke asks it
// before it starts a unit, and starts only an enabled one); every unit is
// inactive.
const systemctlShim = `#!/bin/sh
echo "$*" >>/tmp/systemctl.log
for a; do
	case $a in
	--root=*) exec /usr/bin/systemctl.real "$@" ;;
	is-enabled) exec /usr/bin/systemctl.real --root=/ "$@" ;;
	is-active) exit 3 ;;
	esac
done
exit 0
`

// rootPackages are installed in the base root besides the package's own
// Depends and Recommends: what a Debian 12 router has (systemd, man-db).
var rootPackages = []string{"systemd", "man-db"}

// depNames lists the packages of Depends-like fields, the first of each
// set of alternatives, without versions.
func depNames(fields ...string) []string {
	var names []string
	for _, f := range fields {
		for _, dep := range strings.Split(f, ",") {
			alt, _, _ := strings.Cut(dep, "|")
			name, _, _ := strings.Cut(strings.TrimSpace(alt), " ")
			name, _, _ = strings.Cut(name, ":")
			if name != "" && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return names
}

// baseRoot returns a tarball of a minimal Debian 12 root holding
// packages, made by mmdebstrap from Debian's mirror once and cached under
// the user's cache folder, named by its recipe.
func baseRoot(t *testing.T, packages []string) string {
	t.Helper()
	packages = slices.Clone(packages)
	sort.Strings(packages)
	recipe := fmt.Sprintf("%s minbase %s %s", debSuite, runtime.GOARCH, strings.Join(packages, ","))
	sum := sha256.Sum256([]byte(recipe))
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	cache = filepath.Join(cache, "ifisp-deb")
	prefix := fmt.Sprintf("%s-%s-", debSuite, runtime.GOARCH)
	tarball := filepath.Join(cache, prefix+hex.EncodeToString(sum[:6])+".tar")
	if _, err := os.Stat(tarball); err == nil {
		t.Logf("base root: %s (cached; %s)", tarball, recipe)
		return tarball
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tmp := tarball + ".tmp"
	cmd := exec.Command("mmdebstrap", "--quiet", "--format=tar", "--variant=minbase", "--include="+strings.Join(packages, ","), debSuite, tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("mmdebstrap %s: %v\n%s", recipe, err, out)
	}
	if err := os.Rename(tmp, tarball); err != nil {
		t.Fatal(err)
	}
	// Roots of other recipes are stale.
	old, _ := filepath.Glob(filepath.Join(cache, prefix+"*.tar"))
	for _, o := range old {
		if o != tarball {
			os.Remove(o)
		}
	}
	t.Logf("base root: %s, made in %v (%s)", tarball, time.Since(start).Round(time.Second), recipe)
	return tarball
}

// newRoot unpacks the base root and sets it up as a booted system's for
// the maintainer scripts (systemctlShim).
func newRoot(t *testing.T, tarball string) *debRoot {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("tar", "--numeric-owner", "-xpf", tarball, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", tarball, err, out)
	}
	r := &debRoot{t: t, dir: dir, tmp: filepath.Join(dir, "tmp")}
	r.must("dpkg-divert", "--local", "--rename", "--divert", "/usr/bin/systemctl.real", "--add", "/usr/bin/systemctl")
	if err := os.WriteFile(filepath.Join(dir, "usr/bin/systemctl"), []byte(systemctlShim), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	return r
}

// fileState is what a snapshot records of one file.
type fileState struct {
	mode fs.FileMode
	size int64
	link string
	sum  [32]byte
}

// snapshotSkip are the folders a snapshot leaves out: dpkg's own database
// and logs (its ifisp entries are checked apart), caches that dpkg
// triggers rebuild (man-db's index), the test's scratch space and the
// stand-in for a running systemd (where systemd-analyze leaves a file).
var snapshotSkip = []string{"/proc", "/sys", "/dev", "/tmp", "/run/systemd", "/var/lib/dpkg", "/var/log", "/var/cache/man", "/var/cache/debconf"}

// snapshot records every file of the root: type, permissions, size,
// symlink target and content.
func (r *debRoot) snapshot() map[string]fileState {
	r.t.Helper()
	files := map[string]fileState{}
	err := filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := "/" + strings.TrimPrefix(strings.TrimPrefix(p, r.dir), "/")
		if slices.Contains(snapshotSkip, name) {
			return fs.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		s := fileState{mode: info.Mode(), size: info.Size()}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			s.link, err = os.Readlink(p)
		case info.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			s.sum = sha256.Sum256(b)
		case info.IsDir():
			s.size = 0
		}
		files[name] = s
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return files
}

// diff lists what was added, removed and changed from a to b.
func diff(a, b map[string]fileState) (added, removed, changed []string) {
	for p, s := range b {
		if o, ok := a[p]; !ok {
			added = append(added, p)
		} else if o != s {
			changed = append(changed, p)
		}
	}
	for p := range a {
		if _, ok := b[p]; !ok {
			removed = append(removed, p)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	sort.Strings(changed)
	return added, removed, changed
}

// status returns dpkg's status and version of ifisp in the root, "" when
// dpkg knows no ifisp.
func (r *debRoot) status() string {
	out, err := r.run(nil, "dpkg-query", "--show", "--showformat=${db:Status-Abbrev}${Version}", "ifisp")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// bumped repacks deb as version+suffix: an upgrade with the same files.
func bumped(t *testing.T, deb, suffix string) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if out, err := exec.Command("dpkg-deb", "--raw-extract", deb, tree).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --raw-extract: %v\n%s", err, out)
	}
	control := filepath.Join(tree, "DEBIAN/control")
	b, err := os.ReadFile(control)
	if err != nil {
		t.Fatal(err)
	}
	version := regexp.MustCompile(`(?m)^Version: (.*)$`)
	b = version.ReplaceAll(b, []byte("Version: ${1}"+suffix))
	if err := os.WriteFile(control, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bumped.deb")
	if o, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", tree, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, o)
	}
	return out
}

// lo is what ifupdown exports to the hooks for `ifup lo`.
var lo = []string{"IFACE=lo", "LOGICAL=lo", "ADDRFAM=inet", "METHOD=loopback", "MODE=start", "PHASE=post-up", "VERBOSITY=0"}

// TestDebLifecycle installs the amd64 package into a clean Debian 12 root
// (its Depends and Recommends in it, as apt would have them), installs it
// again, upgrades it, removes it and purges it, and checks each state:
// files where policy says, conffiles, the unit enabled but never started
// (restarted on upgrade only if it runs, stopped on remove), hooks that run
// and do nothing once the package is removed; after the purge the root is
// as it was before, file for file.
func TestDebLifecycle(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Fatalf("the lifecycle test installs the amd64 package; this is %s", runtime.GOARCH)
	}
	start := time.Now()
	deb := debFile(t, "amd64")
	version := debField(t, deb, "Version")
	files, conffiles := debContents(t, deb)
	tarball := baseRoot(t, append(depNames(debField(t, deb, "Depends"), debField(t, deb, "Recommends")), rootPackages...))
	r := newRoot(t, tarball)
	for _, d := range []string{deb, bumped(t, deb, "+upgrade1")} {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(r.tmp, filepath.Base(d)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	debIn := "/tmp/" + filepath.Base(deb)
	t.Logf("a clean root in %v", time.Since(start).Round(time.Millisecond))
	before := r.snapshot()
	phase := time.Now()
	lap := func(what string) {
		t.Logf("%s: %v", what, time.Since(phase).Round(time.Millisecond))
		phase = time.Now()
	}

	// Install.
	r.must("dpkg", "--install", debIn)
	noStart(t, r.systemctl())
	installed(t, r, files, conffiles, version, nil)
	lap("install")

	// Install again: an upgrade to the same version.
	r.must("dpkg", "--install", debIn)
	restarted(t, r.systemctl())
	installed(t, r, files, conffiles, version, nil)
	lap("install again")

	// The operator edits one conffile and deletes another; the upgrade
	// keeps both choices.
	edited, deleted := "/etc/iproute2/rt_protos.d/ifisp.conf", "/etc/network/if-up.d/ifisp-snat"
	appendFile(t, filepath.Join(r.dir, edited), "# edited by the operator\n")
	if err := os.Remove(filepath.Join(r.dir, deleted)); err != nil {
		t.Fatal(err)
	}
	r.must("dpkg", "--install", "/tmp/bumped.deb")
	restarted(t, r.systemctl())
	installed(t, r, files, conffiles, version+"+upgrade1", []string{deleted})
	if b, _ := os.ReadFile(filepath.Join(r.dir, edited)); !strings.HasSuffix(string(b), "# edited by the operator\n") {
		t.Errorf("%s: the upgrade lost the operator's edit:\n%s", edited, b)
	}
	if _, err := os.Lstat(filepath.Join(r.dir, deleted)); err == nil {
		t.Errorf("%s: the upgrade brought back the conffile the operator deleted", deleted)
	}
	lap("upgrade")

	// What the hooks and the monitor leave in the run directory.
	for _, f := range []string{"run/ifisp/lock", "run/ifisp/links/wanb.inet.json", "run/ifisp/watch.json"} {
		appendFile(t, filepath.Join(r.dir, f), "{}\n")
	}

	// Remove: the conffiles (and the unit's enablement) stay, the rest goes.
	r.must("dpkg", "--remove", "ifisp")
	if calls := r.systemctl(); !slices.Contains(calls, "stop ifisp-watch.service") {
		t.Errorf("dpkg --remove did not stop ifisp-watch: systemctl was asked %q", calls)
	}
	if got := r.status(); got != "rc "+version+"+upgrade1" {
		t.Errorf("after dpkg --remove: status %q, want rc (removed, config files)", got)
	}
	added, removed, changed := diff(before, r.snapshot())
	kept := map[string]bool{}
	for _, c := range conffiles {
		for p := c; p != "/"; p = path.Dir(p) {
			kept[p] = true
		}
	}
	for _, p := range added {
		switch {
		case kept[p] && p != deleted,
			strings.HasPrefix(p, "/etc/systemd/system/"),
			strings.HasPrefix(p, "/var/lib/systemd/deb-systemd-helper-"),
			p == "/run/ifisp" || strings.HasPrefix(p, "/run/ifisp/"):
		default:
			t.Errorf("after dpkg --remove: %s is left", p)
		}
	}
	for _, c := range conffiles {
		if _, err := os.Lstat(filepath.Join(r.dir, c)); err != nil && c != deleted {
			t.Errorf("after dpkg --remove: conffile %s is gone: %v", c, err)
		}
	}
	if len(removed) > 0 || len(changed) > 0 {
		t.Errorf("dpkg --remove: removed %v, changed %v of what was there before ifisp", removed, changed)
	}
	// The hooks left behind do nothing now.
	if out, err := r.run(lo, "run-parts", "--exit-on-error", "--verbose", "/etc/network/if-up.d"); err != nil {
		t.Errorf("after dpkg --remove: run-parts if-up.d for lo: %v\n%s", err, out)
	}
	if out, err := r.run(nil, "/etc/network/if-post-down.d/ifisp-route", "--help"); err != nil || out != "" {
		t.Errorf("after dpkg --remove: the ifisp-route hook: %v %q, want exit 0 and nothing said", err, out)
	}
	lap("remove")

	// Purge: nothing of ifisp is left.
	r.must("dpkg", "--purge", "ifisp")
	r.systemctl()
	purged(t, r, before, nil)
	lap("purge")

	// A notify.d script of the operator's survives a purge (and so does
	// its folder); nothing else does.
	r.must("dpkg", "--install", debIn)
	r.systemctl()
	appendFile(t, filepath.Join(r.dir, "etc/ifisp/notify.d/page-me"), "#!/bin/sh\nexit 0\n")
	r.must("dpkg", "--purge", "ifisp")
	r.systemctl()
	purged(t, r, before, []string{"/etc/ifisp", "/etc/ifisp/notify.d", "/etc/ifisp/notify.d/page-me"})
	lap("install, a notify.d script, purge")
	t.Logf("in all: %v", time.Since(start).Round(time.Millisecond))
}

// noStart checks that a fresh install did not start ifisp-watch.
func noStart(t *testing.T, calls []string) {
	t.Helper()
	starts := []string{"start", "restart", "try-restart", "reload-or-restart"}
	for _, c := range calls {
		if f := strings.Fields(c); slices.ContainsFunc(f, func(a string) bool { return slices.Contains(starts, a) }) {
			t.Errorf("dpkg --install asked systemd to %q: the unit must be enabled, not started", c)
		}
	}
}

// restarted checks that an upgrade restarted ifisp-watch only if it runs.
func restarted(t *testing.T, calls []string) {
	t.Helper()
	if !slices.Contains(calls, "try-restart ifisp-watch.service") {
		t.Errorf("the upgrade did not try-restart ifisp-watch: systemctl was asked %q", calls)
	}
	for _, c := range calls {
		if f := strings.Fields(c); slices.Contains(f, "start") || slices.Contains(f, "restart") {
			t.Errorf("the upgrade asked systemd to %q: only try-restart, which leaves a stopped monitor stopped", c)
		}
	}
}

// installed checks the root with the package installed at version: its
// files, the conffiles dpkg knows (but those deleted), the unit enabled,
// no ifisp process, the hooks, the route protocol's name, the man pages,
// and `ifisp check` on the example where the package has the command.
func installed(t *testing.T, r *debRoot, files map[string]debEntry, conffiles []string, version string, deleted []string) {
	t.Helper()
	if got := r.status(); got != "ii "+version {
		t.Errorf("status %q, want ii %s", got, version)
	}
	for p, e := range files {
		if slices.Contains(deleted, p) {
			continue
		}
		fi, err := os.Lstat(filepath.Join(r.dir, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
		} else if fi.Mode() != e.mode {
			t.Errorf("%s: %v, want %v", p, fi.Mode(), e.mode)
		}
	}
	var want []string
	for _, c := range conffiles {
		want = append(want, c)
	}
	var got []string
	for _, l := range strings.Split(r.must("dpkg-query", "--show", "--showformat=${Conffiles}", "ifisp"), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			got = append(got, f[0])
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("dpkg's conffiles of ifisp %v, want %v", got, want)
	}

	// Enabled: the symlink systemd starts it by at boot.
	link := filepath.Join(r.dir, "etc/systemd/system/multi-user.target.wants/ifisp-watch.service")
	if target, err := os.Readlink(link); err != nil || path.Base(target) != "ifisp-watch.service" {
		t.Errorf("ifisp-watch is not enabled: %s -> %q (%v)", link, target, err)
	}
	if out, _ := r.run(nil, "systemctl.real", "--root=/", "is-enabled", "ifisp-watch.service"); strings.TrimSpace(out) != "enabled" {
		t.Errorf("systemctl is-enabled ifisp-watch: %q", out)
	}
	// Not started: no process runs a binary of the root's.
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if exe, err := os.Readlink(p); err == nil && strings.HasPrefix(exe, r.dir+"/") {
			t.Errorf("%s runs %s", filepath.Dir(p), exe)
		}
	}
	if out, err := r.run(nil, "systemd-analyze", "verify", "/usr/lib/systemd/system/ifisp-watch.service"); err != nil || out != "" {
		t.Errorf("systemd-analyze verify ifisp-watch.service: %v\n%s", err, out)
	}

	// The hooks, as run-parts runs them, and by hand.
	hooks, err := lab.Layout()
	if err != nil {
		t.Fatal(err)
	}
	folders := map[string][]string{}
	for _, h := range hooks {
		if !slices.Contains(deleted, "/etc/network/"+h.Folder+"/"+h.Name) {
			folders[h.Folder] = append(folders[h.Folder], h.Name)
		}
	}
	for folder, names := range folders {
		dir := "/etc/network/" + folder
		listed := r.must("run-parts", "--test", dir)
		var ours []string
		for _, l := range strings.Fields(listed) {
			if slices.Contains(names, path.Base(l)) {
				ours = append(ours, path.Base(l))
			}
		}
		sort.Strings(names)
		if !slices.Equal(ours, names) {
			t.Errorf("run-parts --test %s runs %v of ifisp's, want %v", dir, ours, names)
		}
		if out, err := r.run(lo, "run-parts", "--exit-on-error", dir); err != nil || strings.Contains(out, "ifisp") {
			t.Errorf("run-parts %s for lo: %v\n%s", dir, err, out)
		}
	}
	if out := r.must("/etc/network/if-down.d/ifisp-route", "--help"); !strings.HasPrefix(out, "usage: ifisp-route ") {
		t.Errorf("if-down.d/ifisp-route --help:\n%s", out)
	}
	if out := r.must("ifisp-watch", "--help"); !strings.Contains(out, "--notify-dir") {
		t.Errorf("ifisp-watch --help:\n%s", out)
	}
	// iproute2 knows the protocol's name.
	if out, err := r.run(nil, "ip", "route", "show", "table", "all", "proto", "ifisp"); err != nil {
		t.Errorf("ip route show proto ifisp: %v\n%s", err, out)
	}
	// man finds every binary's page.
	for _, b := range binaries(t) {
		if out, err := r.run(nil, "man", "-w", b); err != nil || !strings.HasPrefix(out, "/usr/share/man/man8/") {
			t.Errorf("man -w %s: %v %q", b, err, out)
		}
	}
	if out, err := r.run(nil, "man", "-w", "5", "ifisp-interfaces"); err != nil {
		t.Errorf("man -w 5 ifisp-interfaces: %v %q", err, out)
	}
	// The operator's first check (issue 16), once the package has ifisp.
	if _, ok := files["/usr/sbin/ifisp"]; ok {
		tables := filepath.Join(r.dir, "etc/iproute2/rt_tables.d/isp.conf")
		appendFile(t, tables, "100 ispa\n101 ispb\n")
		if out, err := r.run(nil, "ifisp", "check", "/usr/share/doc/ifisp/examples/two-isp.interfaces"); err != nil {
			t.Errorf("ifisp check two-isp.interfaces: %v\n%s", err, out)
		}
		os.Remove(tables)
	} else {
		t.Logf("no /usr/sbin/ifisp in the package: ifisp check not run")
	}
}

// purged checks that the root is as before, but for the paths of extra,
// and that dpkg has forgotten ifisp.
func purged(t *testing.T, r *debRoot, before map[string]fileState, extra []string) {
	t.Helper()
	if got := r.status(); got != "" && !strings.HasPrefix(got, "un") && !strings.HasPrefix(got, "pn") {
		t.Errorf("after dpkg --purge: status %q", got)
	}
	if left, _ := filepath.Glob(filepath.Join(r.dir, "var/lib/dpkg/info/ifisp.*")); len(left) > 0 {
		t.Errorf("after dpkg --purge: %v", left)
	}
	added, removed, changed := diff(before, r.snapshot())
	if !slices.Equal(added, extra) || len(removed) > 0 || len(changed) > 0 {
		t.Errorf("after dpkg --purge, the root differs from before the install (want added %v):\nadded %v\nremoved %v\nchanged %v", extra, added, removed, changed)
	}
	for i := len(extra) - 1; i >= 0; i-- {
		if err := os.Remove(filepath.Join(r.dir, extra[i])); err != nil {
			t.Fatal(err)
		}
	}
}

// appendFile appends s to the file at p, making it and its folder.
func appendFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}
