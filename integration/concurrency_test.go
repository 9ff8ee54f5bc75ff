package integration

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/registry"
)

var seedFlag = flag.Uint64("seed", 0, "seed of TestParallelEqualsSerial's sequences and TestKillConverges' kill points (0: from the time)")

// testSeed returns the seed of a randomised test and logs how to run the
// same test again.
func testSeed(t *testing.T) uint64 {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (again: go test ./integration/ -run '^%s$' -seed %d)", seed, t.Name(), seed)
	return seed
}

// wans are the interfaces the randomised tests bring up and down.
var wans = []string{"wana", "wanb"}

// ifupdown runs ifup (up) or ifdown of iface.
func ifupdown(l *lab.Lab, iface string, up bool) (string, error) {
	if up {
		return l.Ifup(iface)
	}
	return l.Ifdown(iface)
}

func opName(up bool) string {
	if up {
		return "ifup"
	}
	return "ifdown"
}

// sequence is one interface's operations, in order: true is ifup.
type sequence []bool

func (s sequence) String() string {
	names := make([]string, len(s))
	for i, up := range s {
		names[i] = strings.TrimPrefix(opName(up), "if")
	}
	return strings.Join(names, ",")
}

// randomSequence returns 1 to 3 operations for an interface that is down:
// up, down, up, ... ifupdown answers an ifup of an interface it already
// configured (and an ifdown of one it did not) with a message and exit 0
// and runs no hook, so a repeated operation would only test ifupdown: the
// operations alternate, and each one runs ifisp's hooks.
func randomSequence(r *rand.Rand) sequence {
	s := make(sequence, 1+r.IntN(3))
	for i := range s {
		s[i] = i%2 == 0
	}
	return s
}

// settledState takes the router's state once the kernel has finished what
// it does asynchronously after an interface change: once its link watch,
// which runs up to a second late, has caught up on every interface (and
// added the IPv6 link-local addresses and routes of the links it found
// ready), so that nothing the kernel finishes later is ever taken for
// ifisp's. The hooks have all exited by then; nothing else changes the
// router.
func settledState(l *lab.Lab) lab.State {
	l.WaitLinkWatch(5 * time.Second)
	return l.State()
}

// settledDiff compares the router's settled state with want.
func settledDiff(l *lab.Lab, want lab.State) string {
	return lab.StateDiff(want, settledState(l))
}

// scrub takes the router back to the all-down state want after a run that
// left some of ifisp's state behind, so that the next run starts clean:
// ifupdown's forced deconfiguration, then every rule and route of ifisp's
// route protocol, the ISP tables, the iptables rule sets as want has them,
// and the registry. It is the test's repair, not ifisp's: the failure that
// made it necessary has been reported already. It fails the test if the
// router cannot be put back.
func scrub(t *testing.T, l *lab.Lab, want lab.State) {
	t.Helper()
	l.Ifdown(append([]string{"--force"}, wans...)...)
	for _, family := range []string{"-4", "-6"} {
		for range 100 {
			if _, err := l.Exec(l.Router, "ip", family, "rule", "del", "proto", "ifisp"); err != nil {
				break
			}
		}
		for _, table := range []string{l.A.Name, l.B.Name} {
			l.Exec(l.Router, "ip", family, "route", "flush", "table", table)
		}
		l.Exec(l.Router, "ip", family, "route", "flush", "proto", "ifisp")
	}
	for cmd, rules := range map[string][]string{"iptables-restore": want.IPTables, "ip6tables-restore": want.IP6Tables} {
		c := exec.Command("ip", "netns", "exec", l.Router, cmd)
		c.Stdin = strings.NewReader(strings.Join(rules, "\n") + "\n")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("scrub: %s: %v\n%s", cmd, err, out)
		}
	}
	files, _ := filepath.Glob(filepath.Join(l.RunDir, registry.Folder, "*.json"))
	for _, f := range files {
		os.Remove(f)
	}
	if d := settledDiff(l, want); d != "" {
		t.Fatalf("scrub could not put the router back in its all-down state (-want +got):\n%s", d)
	}
}

// references brings the WANs up and down, each set of up WANs reached
// twice, by different paths, and returns each set's state (by upKey) and
// how long each operation took (by "ifup wana" and the like). It fails the
// test if a set's state is not the same both times: the tests compare
// against these. It starts with an up and down of both WANs: the first up
// creates what then stays for good (the nat and filter tables and their
// built-in chains), which is not ifisp's to remove.
func references(t *testing.T, l *lab.Lab) (map[string]lab.State, map[string][]time.Duration) {
	t.Helper()
	l.MustIfup(wans...)
	l.MustIfdown(wans...)
	refs := map[string]lab.State{"none up": settledState(l)}
	took := map[string][]time.Duration{}
	up := map[string]bool{}
	for round := range 2 {
		for _, step := range []struct {
			iface string
			up    bool
		}{{"wana", true}, {"wanb", true}, {"wana", false}, {"wanb", false}, {"wanb", true}, {"wana", true}, {"wanb", false}, {"wana", false}} {
			begin := time.Now()
			if out, err := ifupdown(l, step.iface, step.up); err != nil {
				t.Fatalf("%s %s: %v\n%s", opName(step.up), step.iface, err, out)
			}
			key := opName(step.up) + " " + step.iface
			took[key] = append(took[key], time.Since(begin))
			up[step.iface] = step.up
			if ref, ok := refs[upKey(up)]; !ok {
				refs[upKey(up)] = settledState(l)
			} else if d := settledDiff(l, ref); d != "" {
				t.Fatalf("round %d: %s is not the same state each time (-first +now):\n%s", round, upKey(up), d)
			}
		}
	}
	return refs, took
}

// TestParallelEqualsSerial runs random ifup/ifdown sequences of wana and
// wanb, one sequence per interface, first one interface after the other,
// then both at once (one goroutine per interface, real ifupdown processes
// side by side, as Debian's ifup@.service instances run them), and
// requires the same kernel state at the end of both, and the all-down
// state after an ifdown of both.
func TestParallelEqualsSerial(t *testing.T) {
	const runs = 50
	r := rand.New(rand.NewPCG(testSeed(t), 0))
	l := newRouteLab(t)
	refs, _ := references(t, l)
	down := refs["none up"]

	start := time.Now()
	equal, stateDiffered, opFailed, downDirty := 0, 0, 0, 0
	shown := 0
	for run := range runs {
		seqs := map[string]sequence{}
		for _, iface := range wans {
			seqs[iface] = randomSequence(r)
		}
		// Two runs in three start both interfaces' first operation at
		// the same moment, the others one of them up to 150 ms later (an
		// ifup takes about 200 ms, an ifdown 300): other phases of the
		// two overlap then.
		jitter := map[string]time.Duration{}
		if r.IntN(3) == 0 {
			jitter[wans[r.IntN(len(wans))]] = time.Duration(r.IntN(150)) * time.Millisecond
		}
		name := fmt.Sprintf("run %d: wana %v, wanb %v (wanb starts %v after wana in parallel)",
			run, seqs["wana"], seqs["wanb"], jitter["wanb"]-jitter["wana"])
		var problems []string

		// Serially: the reference.
		for _, iface := range wans {
			for _, up := range seqs[iface] {
				if _, err := ifupdown(l, iface, up); err != nil {
					problems = append(problems, fmt.Sprintf("serial %s %s: %v", opName(up), iface, firstLines(err.Error(), 5)))
				}
			}
		}
		// Whatever the path, the same WANs up give the same state: the
		// serial run must end in the reference state of the WANs it
		// leaves up, which then stands for it (a state settled, looked
		// at twice).
		final := map[string]bool{}
		for _, iface := range wans {
			final[iface] = len(seqs[iface])%2 == 1
		}
		serial := refs[upKey(final)]
		if d := settledDiff(l, serial); d != "" {
			problems = append(problems, fmt.Sprintf("state after the serial run differs from %s's (-want +got):\n%s", upKey(final), d))
		}
		if _, err := l.Ifdown(wans...); err != nil {
			problems = append(problems, fmt.Sprintf("ifdown after the serial run: %v", firstLines(err.Error(), 5)))
		}
		if d := settledDiff(l, down); d != "" {
			problems = append(problems, "all-down state after the serial run differs (-want +got):\n"+d)
			scrub(t, l, down)
		}
		if len(problems) > 0 {
			// The serial run is the reference: without it, no comparison.
			t.Errorf("%s: the serial reference failed:\n%s", name, strings.Join(problems, "\n"))
			continue
		}

		// In parallel.
		var wg sync.WaitGroup
		var mu sync.Mutex
		failed := false
		begin := time.Now()
		for _, iface := range wans {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Until(begin.Add(jitter[iface])))
				for _, up := range seqs[iface] {
					if _, err := ifupdown(l, iface, up); err != nil {
						mu.Lock()
						failed = true
						problems = append(problems, fmt.Sprintf("parallel %s %s: %v", opName(up), iface, firstLines(err.Error(), 5)))
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		d := settledDiff(l, serial)
		if d != "" {
			stateDiffered++
			problems = append(problems, "state after the parallel run differs from the serial run's (-serial +parallel):\n"+d)
		}
		if failed {
			opFailed++
		}
		if _, err := l.Ifdown(wans...); err != nil {
			problems = append(problems, fmt.Sprintf("ifdown after the parallel run: %v", firstLines(err.Error(), 5)))
		}
		if d := settledDiff(l, down); d != "" {
			downDirty++
			problems = append(problems, "all-down state after the parallel run's ifdown differs (-want +got):\n"+d)
			scrub(t, l, down)
		}
		if len(problems) == 0 {
			equal++
			continue
		}
		reportRun(t, &shown, name, problems)
	}
	t.Logf("parallel = serial %d/%d (state differed in %d, an ifup or ifdown failed in %d, ifdown left state behind in %d) in %v",
		equal, runs, stateDiffered, opFailed, downDirty, time.Since(start).Round(time.Second))
}

// firstLines returns the first n lines of s, joined by " | ".
func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, " | ")
}

// changed returns the lines of a report that a diff marks changed (+ or
// -), at most n, joined by " | ": a one-line summary of a difference.
func changed(report string, n int) string {
	var lines []string
	for _, line := range strings.Split(report, "\n") {
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "+") || strings.HasPrefix(t, "-") {
			lines = append(lines, strings.Join(strings.Fields(t), " "))
		}
	}
	if len(lines) == 0 {
		return firstLines(report, 1)
	}
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("(%d more)", len(lines)-n))
	}
	return strings.Join(lines, " | ")
}

// upKey names a set of up WANs, the key of references' states.
func upKey(up map[string]bool) string {
	var names []string
	for _, iface := range wans {
		if up[iface] {
			names = append(names, iface)
		}
	}
	if names == nil {
		return "none up"
	}
	return strings.Join(names, "+") + " up"
}

// TestKillConverges kills ifup or ifdown of one WAN, with everything it
// started (its process group), with SIGKILL at a random moment of its run,
// the other WAN up or down, and requires that `ifdown --force` of the WAN
// (ifupdown's own record may be wrong after a kill) gives exactly the
// state without it, and the next ifup exactly the state with it.
func TestKillConverges(t *testing.T) {
	const points = 40
	r := rand.New(rand.NewPCG(testSeed(t), 0))
	l := newRouteLab(t)

	// The reference states, one per set of up WANs, and how long each
	// operation takes (the median).
	refs, took := references(t, l)
	median := map[string]time.Duration{}
	for key, ds := range took {
		slices.Sort(ds)
		median[key] = ds[len(ds)/2]
	}
	t.Logf("ifupdown takes (median): %v", median)

	// setUp brings the WANs to the given states, from whatever they are.
	setUp := func(want map[string]bool) {
		t.Helper()
		for _, iface := range wans {
			if out, err := ifupdown(l, iface, want[iface]); err != nil {
				t.Fatalf("%s %s: %v\n%s", opName(want[iface]), iface, err, out)
			}
		}
		if d := settledDiff(l, refs[upKey(want)]); d != "" {
			t.Fatalf("the WANs brought to %s by ifup and ifdown, the state is not the reference (-want +got):\n%s", upKey(want), d)
		}
	}

	start := time.Now()
	killed, converged, early, shown := 0, 0, 0, 0
	for attempt := 0; killed < points; attempt++ {
		if attempt >= 3*points {
			t.Fatalf("only %d of %d attempts killed ifupdown before it finished", killed, attempt)
		}
		iface := wans[r.IntN(len(wans))]
		other := wans[0]
		if other == iface {
			other = wans[1]
		}
		opUp := r.IntN(2) == 0
		otherUp := r.IntN(2) == 0
		key := opName(opUp) + " " + iface
		delay := time.Duration(r.Int64N(int64(median[key])))
		name := fmt.Sprintf("kill point %d: %s killed after %v (of its usual %v), %s %s", attempt, key, delay, median[key], other, map[bool]string{true: "up", false: "down"}[otherUp])

		setUp(map[string]bool{iface: !opUp, other: otherUp})
		cmd := l.IfupdownCommand(opName(opUp), iface)
		// Its own process group, to kill everything it started; its
		// output to /dev/null, so that no pipe outlives the kill.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(delay):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			// It finished first: not a kill point. Where it ended is
			// still the next one's start, and setUp checks it.
			early++
			continue
		}
		killed++

		var problems []string
		without := map[string]bool{other: otherUp}
		if _, err := l.Ifdown("--force", iface); err != nil {
			problems = append(problems, fmt.Sprintf("ifdown --force %s: %v", iface, firstLines(err.Error(), 5)))
		}
		if d := settledDiff(l, refs[upKey(without)]); d != "" {
			problems = append(problems, fmt.Sprintf("after ifdown --force %s, the state differs from %s's (-want +got):\n%s", iface, upKey(without), d))
		}
		with := map[string]bool{iface: true, other: otherUp}
		if _, err := l.Ifup(iface); err != nil {
			problems = append(problems, fmt.Sprintf("ifup %s: %v", iface, firstLines(err.Error(), 5)))
		}
		if d := settledDiff(l, refs[upKey(with)]); d != "" {
			problems = append(problems, fmt.Sprintf("after ifup %s, the state differs from %s's (-want +got):\n%s", iface, upKey(with), d))
		}
		if len(problems) == 0 {
			converged++
			continue
		}
		reportRun(t, &shown, name, problems)
		scrub(t, l, refs["none up"])
	}
	t.Logf("kill-converged %d/%d (%d more runs finished before their kill) in %v",
		converged, killed, early, time.Since(start).Round(time.Second))
}

// reportRun fails the test with a run's problems: every difference in full
// for the first few runs, then one line each (the figures logged at the end
// say the rest).
func reportRun(t *testing.T, shown *int, name string, problems []string) {
	t.Helper()
	if *shown < 3 {
		*shown++
		t.Errorf("%s:\n%s", name, strings.Join(problems, "\n"))
		return
	}
	t.Errorf("%s: %s: %s", name, firstLines(problems[0], 1), changed(problems[0], 3))
}
