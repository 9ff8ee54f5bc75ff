package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"

	"github.com/ifisp/ifisp/hooks"
	"github.com/ifisp/ifisp/pkg/rundir"
)

// Root is the repository's top folder, found from this file's path.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "../.."))
}

// Build builds every binary under cmd/ into dir, statically, as `make build`
// does. In the VM tier's guest, which has no Go toolchain, it copies the
// binaries vm/run.sh built and put in IFISP_VM_BIN instead.
func Build(dir string) error {
	if vmBin := os.Getenv("IFISP_VM_BIN"); vmBin != "" {
		if out, err := exec.Command("cp", "-a", vmBin+"/.", dir+"/").CombinedOutput(); err != nil {
			return fmt.Errorf("copying the guest's binaries: %v\n%s", err, out)
		}
		return nil
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", dir+"/", "./cmd/...")
	cmd.Dir = Root()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/...: %v\n%s", err, out)
	}
	return nil
}

// Hook is one line of hooks/layout.
type Hook = hooks.Hook

// Layout reads hooks/layout.
func Layout() ([]Hook, error) { return hooks.Layout() }

// Install links the hooks of hooks/layout, running the binaries in binDir,
// into the router's /etc/network/if-*.d, and names ifisp's route protocol
// in its /etc/iproute2/rt_protos.d, as `make install` does on a real
// system. With only, just the hooks of those binaries. The hooks find the
// lab's RunDir by themselves: it is the run directory of the router's
// named network namespace (package rundir).
func (l *Lab) Install(binDir string, only ...string) {
	l.t.Helper()
	hooks, err := Layout()
	if err != nil {
		l.t.Fatal(err)
	}
	for _, h := range hooks {
		if len(only) > 0 && !slices.Contains(only, h.Binary) {
			continue
		}
		l.Symlink(filepath.Join(binDir, h.Binary), filepath.Join(l.Etc(), "network", h.Folder, h.Name))
	}
	protos, err := os.ReadFile(filepath.Join(Root(), "hooks/rt_protos.conf"))
	if err != nil {
		l.t.Fatal(err)
	}
	l.WriteFile(filepath.Join(l.Etc(), "iproute2/rt_protos.d/ifisp.conf"), string(protos))
}

// RecordHookEnv adds a hook to each of the router's if-*.d folders that
// records the environment ifupdown gives the hooks, for HookEnv.
func (l *Lab) RecordHookEnv() {
	l.t.Helper()
	l.recordHooks("env", "env")
}

// recordHooks adds to each of the router's if-*.d folders a hook,
// zzzz-lab-KIND (after the others), that writes what cmd prints to
// /etc/network/KIND.$IFACE.$ADDRFAM.$PHASE, for hookRecord. It is the
// lab's, never installed on a real system.
func (l *Lab) recordHooks(kind, cmd string) {
	l.t.Helper()
	script := "#!/bin/sh\n" + cmd + ` >"/etc/network/` + kind + `.$IFACE.$ADDRFAM.$PHASE" 2>&1` + "\n"
	for _, d := range []string{"if-pre-up.d", "if-up.d", "if-down.d", "if-post-down.d"} {
		l.WriteScript(filepath.Join(l.Etc(), "network", d, "zzzz-lab-"+kind), script)
	}
}

// hookRecord returns what recordHooks' hook of kind wrote at the last
// ifup or ifdown of iface, family ("inet", "inet6") and phase.
func (l *Lab) hookRecord(kind, iface, family, phase string) string {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Etc(), "network", kind+"."+iface+"."+family+"."+phase))
	if err != nil {
		l.t.Fatal(err)
	}
	return string(b)
}

// placeholder matches what `make install` fills in a hook's template:
// @SBINDIR@, @SCRIPT@ and the like.
var placeholder = regexp.MustCompile(`@[A-Z]+@`)

// hookFile returns hooks/name as `make install` writes it: @SBINDIR@
// made binDir, and each further placeholder in vars (pairs of placeholder
// and value) made its value. A template that does not name @SBINDIR@, or
// names a placeholder left unfilled, fails the test: the lab would run
// another hook than the one installed.
func (l *Lab) hookFile(name, binDir string, vars ...string) string {
	l.t.Helper()
	tmpl, err := os.ReadFile(filepath.Join(Root(), "hooks", name))
	if err != nil {
		l.t.Fatal(err)
	}
	if !strings.Contains(string(tmpl), "@SBINDIR@") {
		l.t.Fatalf("hooks/%s does not name @SBINDIR@", name)
	}
	hook := strings.NewReplacer(append([]string{"@SBINDIR@", binDir}, vars...)...).Replace(string(tmpl))
	if left := placeholder.FindAllString(hook, -1); left != nil {
		l.t.Fatalf("hooks/%s has placeholders the lab does not fill, %v:\n%s", name, left, hook)
	}
	return hook
}

// Interfaces writes the router's /etc/network/interfaces.
func (l *Lab) Interfaces(content string) {
	l.t.Helper()
	l.WriteFile(filepath.Join(l.Etc(), "network/interfaces"), content)
}

// Ifup runs the real ifup in the router's namespace, with a state folder of
// the lab's own.
func (l *Lab) Ifup(ifaces ...string) (string, error) {
	return l.ifupdown("ifup", ifaces)
}

// Ifdown runs the real ifdown in the router's namespace.
func (l *Lab) Ifdown(ifaces ...string) (string, error) {
	return l.ifupdown("ifdown", ifaces)
}

func (l *Lab) ifupdown(cmd string, ifaces []string) (string, error) {
	return l.Exec(l.Router, append([]string{cmd, "--state-dir", l.state}, ifaces...)...)
}

// IfupdownCommand returns, not started, the command Ifup or Ifdown runs:
// cmd ("ifup" or "ifdown") in the router's namespace with the lab's state
// folder and args, for a test that must start it itself (in a process
// group of its own, to kill it half-way). `ip netns exec` execs cmd, so
// the command's process is ifupdown itself.
func (l *Lab) IfupdownCommand(cmd string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.Router, cmd, "--state-dir", l.state}, args...)...)
}

// UseIptablesLegacy switches the router to iptables-legacy the way Debian
// does, through update-alternatives' links, but only inside the router's
// namespace: its /etc/alternatives is a copy with the iptables links
// pointing at the legacy binaries.
func (l *Lab) UseIptablesLegacy() {
	l.t.Helper()
	alt := filepath.Join(l.Etc(), "alternatives")
	l.Must("", "cp", "-a", "/etc/alternatives/.", alt+"/")
	for _, cmd := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		legacy := strings.Replace(cmd, "tables", "tables-legacy", 1)
		os.Remove(filepath.Join(alt, cmd))
		if err := os.Symlink("/usr/sbin/"+legacy, filepath.Join(alt, cmd)); err != nil {
			l.t.Fatal(err)
		}
	}
}

// MustIfup is Ifup that fails the test on error.
func (l *Lab) MustIfup(ifaces ...string) {
	l.t.Helper()
	if _, err := l.Ifup(ifaces...); err != nil {
		l.t.Fatal(err)
	}
}

// MustIfdown is Ifdown that fails the test on error.
func (l *Lab) MustIfdown(ifaces ...string) {
	l.t.Helper()
	if _, err := l.Ifdown(ifaces...); err != nil {
		l.t.Fatal(err)
	}
}

// HookEnv returns the environment ifupdown gave the hooks for iface, family
// ("inet", "inet6") and phase, as recorded by the last ifup or ifdown since
// RecordHookEnv: so a test can run one hook again exactly as ifupdown ran
// it.
func (l *Lab) HookEnv(iface, family, phase string) []string {
	l.t.Helper()
	return strings.Split(strings.TrimSpace(l.hookRecord("env", iface, family, phase)), "\n")
}

// RunHook runs the binary in the router's namespace with exactly env as
// its environment, as run-parts would, plus the lab's IFISP_RUN_DIR.
func (l *Lab) RunHook(binary string, env []string) (string, error) {
	return l.Exec(l.Router, append(append([]string{"env", "-i", rundir.Env + "=" + l.RunDir}, env...), binary)...)
}
