package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/rundir"
)

// wanaEnv is the environment ifupdown gives the hooks for wana's inet
// stanza in phase.
func wanaEnv(phase string) []string {
	return []string{"IFACE=wana", "LOGICAL=wana", "ADDRFAM=inet", "METHOD=static", "MODE=start", "PHASE=" + phase,
		"IF_ADDRESS=198.51.100.2", "IF_NETMASK=255.255.255.0", "IF_ISP_TABLE=100", "IF_ISP_GATEWAY=198.51.100.1",
		"IF_SNAT_FROM=10.1.0.0/24", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
}

// TestHookErrors: the ways a hook fails outside the stanza say what failed,
// where, and what to do, on one line each, and change nothing.
func TestHookErrors(t *testing.T) {
	l := lab.New(t)
	before := routingState(l) + l.Must(l.Router, "iptables-save")
	run := func(env []string, args ...string) (string, int) {
		t.Helper()
		cmd := append(append([]string{"env", "-i"}, env...), args...)
		out, err := l.Exec(l.Router, cmd...)
		code := 0
		if err != nil {
			code = 1
			if strings.Contains(err.Error(), "exit status 2") {
				code = 2
			}
		}
		return out, code
	}
	runDir := rundir.Env + "=" + l.RunDir

	// The lock, held by someone else: the hook waits, then names the holder.
	if err := os.MkdirAll(l.RunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(l.RunDir, rundir.LockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	lock.WriteString("the test (pid 1, since 08:00:00.000)\n")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"bad flag", nil, []string{binary("ifisp-route"), "--bogus"}, 2,
			"ifisp-route: unknown flag: --bogus (it takes --phase and --lock-timeout; see ifisp-route --help)"},
		{"argument", nil, []string{binary("ifisp-snat"), "wana"}, 2,
			`ifisp-snat: unexpected argument "wana" (an ifupdown hook takes options only; see ifisp-snat --help)`},
		{"lock held", append(wanaEnv("post-down"), runDir), []string{binary("ifisp-route"), "--lock-timeout", "300ms"}, 1,
			"ifisp-route: wana: waited 300ms for the lock " + filepath.Join(l.RunDir, "lock") + ", held by the test (pid 1, since 08:00:00.000): if that is hung, kill it; ifisp's next ifup or ifdown of its interface repairs what it left"},
		{"run dir", append(wanaEnv("post-down"), rundir.Env+"=/proc/ifisp"), []string{binary("ifisp-snat")}, 1,
			"ifisp-snat: wana: cannot make the run directory /proc/ifisp: no such file or directory (is /run writable? IFISP_RUN_DIR moves it)"},
		{"no iptables", append(wanaEnv("post-down")[:len(wanaEnv("post-down"))-1], "PATH=/nonexistent", rundir.Env+"="+t.TempDir()), []string{binary("ifisp-snat")}, 1,
			"ifisp-snat: wana: iptables-save not found in PATH (install Debian's iptables package)"},
	} {
		out, code := run(tc.env, tc.args...)
		if code != tc.code || out != tc.want+"\n" {
			t.Errorf("%s: exit %d, said:\n%s\nwant exit %d and the one line\n%s", tc.name, code, out, tc.code, tc.want)
		}
	}
	lock.Close()
	if after := routingState(l) + l.Must(l.Router, "iptables-save"); stripSaveComments(after) != stripSaveComments(before) {
		t.Errorf("a failed hook changed the router:\n--- before\n%s--- after\n%s", before, after)
	}
}

// stripSaveComments drops iptables-save's dated comment lines.
func stripSaveComments(s string) string {
	var keep []string
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "#") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}
