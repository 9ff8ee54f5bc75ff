package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The recorders of the router's client scripts: a hook after ifisp's in
// dhclient-script's exit hooks (RecordDHCPRuns) and in pppd's ip-up.d and
// ip-down.d (InstallPPP) records the environment of each run, and by its
// record that ifisp's hook of that run has returned; one in
// dhclient-script's enter hooks records when a run began.

// The recorders' folders, as the router's namespace sees them: inside
// /etc/dhcp and /etc/ppp, because `ip netns exec` binds over the host's
// /etc only what the host's /etc has.
const (
	dhcpRuns = "/etc/dhcp/lab-runs"
	pppRuns  = "/etc/ppp/lab-runs"
)

// startRecord names the records of dhclient-script's enter hooks: when a
// run began.
const startRecord = "start"

// recorder is a hook that records the environment it runs with as
// dir/NAME.TIME.PID: name, when it ran, and its shell's process id (a
// sourced hook's is its script's, the same at both ends of a run). TIME is
// SECONDS.NANOSECONDS, or SECONDS alone where date has no %N (busybox's,
// in the VM tier's guest): the record's modification time then says when.
// Written whole, then renamed: a reader never sees half of one.
// dhclient-script sources it, so it never exits and sets only a variable
// of its own.
func recorder(dir, name string) string {
	return `# The lab's: records when this ran, and its environment.
lab_at=$(date +%s.%N)
lab_at=${lab_at%.%N}
env -0 >"` + dir + `/.new.$$" && mv "` + dir + `/.new.$$" "` + dir + `/` + name + `.$lab_at.$$" || :
`
}

// ScriptRun is one run of a client script of the router, as the lab's
// recorders saw it.
type ScriptRun struct {
	Script string    // "dhclient-script", "ip-up" or "ip-down"
	Start  time.Time // when dhclient-script's enter hooks ran, the moment dhclient handed it the event; zero for pppd's, or unrecorded
	At     time.Time // when the recorder after ifisp's hook ran: that hook has returned
	Env    map[string]string
}

// RecordDHCPRuns records both ends of every run of dhclient-script in
// the router, for ScriptRuns: an exit hook after ifisp's (zz-lab-env sorts
// after DHCPExitHook), and an enter hook for its start, before
// dhclient-script or ifisp's hook have done anything with the event.
// After InstallDHCPHook (or InstallDHCP6Hook); it may be added after ifup
// too (dhclient sees the router's /etc/dhcp as it is now).
func (l *Lab) RecordDHCPRuns() {
	l.t.Helper()
	l.mkdirEtc(dhcpRuns)
	l.WriteFile(filepath.Join(l.Etc(), "dhcp/dhclient-enter-hooks.d/lab-start"), recorder(dhcpRuns, startRecord))
	l.WriteFile(filepath.Join(l.Etc(), "dhcp/dhclient-exit-hooks.d/zz-lab-env"), recorder(dhcpRuns, "dhclient-script"))
}

// etcPath is the host's path of path in the router's /etc.
func (l *Lab) etcPath(path string) string {
	return filepath.Join(l.Etc(), strings.TrimPrefix(path, "/etc/"))
}

// mkdirEtc makes the folder dir in the router's /etc.
func (l *Lab) mkdirEtc(dir string) {
	l.t.Helper()
	if err := os.MkdirAll(l.etcPath(dir), 0o755); err != nil {
		l.t.Fatal(err)
	}
}

// ScriptRuns returns the runs of the router's client scripts recorded so
// far, the oldest end first, each dhclient-script run with the time it
// began (zero for one that began before RecordDHCPRuns).
func (l *Lab) ScriptRuns() []ScriptRun {
	l.t.Helper()
	var runs []ScriptRun
	recording := false
	for _, dir := range []string{dhcpRuns, pppRuns} {
		entries, err := os.ReadDir(l.etcPath(dir))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			l.t.Fatal(err)
		}
		recording = true
		var starts, ends []record
		for _, e := range entries {
			if r, ok := l.readRecord(dir, e.Name()); !ok {
				continue // one being written
			} else if r.Script == startRecord {
				starts = append(starts, r)
			} else {
				ends = append(ends, r)
			}
		}
		for _, end := range ends {
			r := end.ScriptRun
			for _, s := range starts {
				if s.pid == end.pid && !s.At.After(r.At) && s.At.After(r.Start) {
					r.Start = s.At // the latest such: a pid used again is a later run
				}
			}
			runs = append(runs, r)
		}
	}
	if !recording {
		l.t.Fatal("the router's client scripts are not recorded: RecordDHCPRuns or InstallPPP first")
	}
	sort.SliceStable(runs, func(i, j int) bool { return runs[i].At.Before(runs[j].At) })
	return runs
}

// record is one file of a recorder: At is when it ran, Start unset.
type record struct {
	ScriptRun
	pid int
}

// readRecord reads the file name of the recorders' folder dir; ok is
// false for a name that is not a record's (one being written).
func (l *Lab) readRecord(dir, name string) (record, bool) {
	l.t.Helper()
	f := strings.Split(name, ".") // NAME.SECONDS[.NANOSECONDS].PID
	if len(f) < 3 || len(f) > 4 || f[0] == "" {
		return record{}, false
	}
	pid, err := strconv.Atoi(f[len(f)-1])
	if err != nil {
		return record{}, false
	}
	path := filepath.Join(l.etcPath(dir), name)
	var at time.Time
	if len(f) == 4 {
		sec, err1 := strconv.ParseInt(f[1], 10, 64)
		nsec, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return record{}, false
		}
		at = time.Unix(sec, nsec)
	} else if info, err := os.Stat(path); err == nil {
		at = info.ModTime()
	} else {
		l.t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		l.t.Fatal(err)
	}
	r := record{ScriptRun{Script: f[0], At: at, Env: map[string]string{}}, pid}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			r.Env[k] = v
		}
	}
	return r, true
}

// WaitScriptRun waits until a run that began at or after from (ended, for
// one with no recorded start) and satisfies ok has ended, and returns the
// first, or fails the test after timeout, listing the runs it saw.
func (l *Lab) WaitScriptRun(from time.Time, timeout time.Duration, what string, ok func(ScriptRun) bool) ScriptRun {
	l.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		runs := l.ScriptRuns()
		for _, r := range runs {
			began := r.Start
			if began.IsZero() {
				began = r.At
			}
			if !began.Before(from) && ok(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, r := range runs {
				seen = append(seen, r.String())
			}
			l.t.Fatalf("no run %s within %s; the router's client scripts ran:\n%s", what, timeout, strings.Join(seen, "\n"))
		}
	}
}

// Reason is dhclient's reason: PREINIT, BOUND, RENEW, REBIND, REBOOT,
// EXPIRE, FAIL, RELEASE, STOP, TIMEOUT, and their DHCPv6 kin (BOUND6 and
// the rest); "" for pppd's scripts.
func (r ScriptRun) Reason() string { return r.Env["reason"] }

// runVars are the variables String shows, those ifisp's hooks read:
// dhclient's for DHCPv4 and DHCPv6, and pppd's.
var runVars = []string{
	"interface", "old_ip_address", "new_ip_address", "new_subnet_mask", "new_routers", "new_dhcp_lease_time",
	"new_ip6_address", "new_ip6_prefix", "new_max_life", "new_preferred_life", "old_ip6_address", "old_ip6_prefix", "cur_ip6_prefix",
	"PPP_IFACE", "PPP_LOCAL", "PPP_REMOTE", "PPP_IPPARAM", "CALL_FILE",
}

// String is when the run began (if recorded) and ended, its script and
// reason, and those of runVars it had.
func (r ScriptRun) String() string {
	when := r.At.Format("15:04:05.000")
	if !r.Start.IsZero() {
		when = r.Start.Format("15:04:05.000") + "-" + when
	}
	parts := []string{when, r.Script}
	if reason := r.Reason(); reason != "" {
		parts = append(parts, reason)
	}
	for _, k := range runVars {
		if v, ok := r.Env[k]; ok {
			parts = append(parts, k+"="+v)
		}
	}
	return strings.Join(parts, " ")
}

// NewPrefix returns the prefix a DHCPv6 run delegates (new_ip6_prefix
// with a lifetime left); ok is false for any other run.
func (r ScriptRun) NewPrefix() (netip.Prefix, bool) {
	switch r.Reason() {
	case "BOUND6", "RENEW6", "REBIND6":
	default:
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(r.Env["new_ip6_prefix"])
	if err != nil || strings.Trim(r.Env["new_max_life"], "0") == "" {
		return netip.Prefix{}, false
	}
	return p, true
}
