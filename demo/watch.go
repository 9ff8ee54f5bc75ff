package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/watch"
)

// watchStep is one step of the dead-upstream timeline: its event, done to
// both labs at once, then until ifisp-watch has reacted, then hold more.
type watchStep struct {
	happening
	react func(w *lab.Watch) time.Duration // waits for the daemon; nil: nothing to wait for
	does  string                           // what the daemon does to wanb, for the summary
	hold  time.Duration
}

// The daemon needs 10 lost rounds of 100 ms to withdraw a link and 30
// answered ones to restore it: 10 s is far beyond either.
const reactTimeout = 10 * time.Second

// deadUpstream kills the preferred ISP's upstream behind a modem that keeps
// carrier, and brings it back, without touching the router.
var deadUpstream = []watchStep{
	{happening{"both up", func(*lab.Lab) {}}, nil, "", 2 * time.Second},
	{happening{"B's upstream dies", func(l *lab.Lab) { l.Upstream(&l.B, 4, 1) }},
		func(w *lab.Watch) time.Duration { return w.WaitFor("wanb", "inet", watch.Down, true, reactTimeout) },
		"withdrew", 3 * time.Second},
	{happening{"B's upstream returns", func(l *lab.Lab) { l.Upstream(&l.B, 4, 0) }},
		func(w *lab.Watch) time.Duration { return w.WaitFor("wanb", "inet", watch.Up, false, reactTimeout) },
		"restored", 2 * time.Second},
}

// outage is deadUpstream's step with B's upstream dead.
const outage = 1

// deadUpstreamPart runs deadUpstream with ifisp-watch beside the seed
// recipe and prints the timeline and what the daemon did.
func deadUpstreamPart(r *runner, bin string) {
	fmt.Println("\nNow ISP B's upstream dies behind its modem: carrier stays up, no ifdown runs.")
	fmt.Println("ifisp-watch probes each ISP 10 times a second; the seed recipe has no health check.")
	fmt.Println("Both labs run at once and B's upstream dies and returns in both at the same moment;")
	fmt.Println("a step lasts until ifisp-watch has reacted, then 2-3 s more.")
	run := watchScenario(r, bin)
	printTimelines(run.ifisp, run.seed)

	fmt.Println("What ifisp-watch did, with its own log line for each transition:")
	for i, re := range run.reactions {
		if deadUpstream[i].react == nil {
			continue
		}
		fmt.Printf("  %s: it %s wanb %s later\n", run.ifisp[i].event, deadUpstream[i].does, re.after.Round(time.Millisecond))
		for _, line := range re.log {
			fmt.Println("      " + line)
		}
	}
	fmt.Printf("The LAN ping's longest reply gap: %s with ifisp-watch (its reroute time), %s with the seed recipe.\n",
		run.ifisp[outage].gap.Round(time.Millisecond), run.seedGap.Round(time.Millisecond))
	dead := run.seed[outage]
	fmt.Printf("The seed recipe has no health check: its LAN lost %d/%d replies while B's upstream was dead,\n", dead.lost, dead.sent)
	fmt.Println("blackholed until the upstream came back; a real one stays so until someone runs ifdown wanb.")
}

// watchRun is what watchScenario saw.
type watchRun struct {
	ifisp, seed []step
	reactions   []reaction // ifisp-watch's, one per step
	// seedGap is the seed lab's longest reply gap over the whole run: its
	// ping's replies only return in the step after the outage.
	seedGap time.Duration
}

// reaction is what ifisp-watch did during one step.
type reaction struct {
	after time.Duration // how long after the event it changed the routes
	log   []string      // its log lines about transitions
}

// watchScenario builds two labs, ifisp's with ifisp-watch and the seed
// recipe's, runs the LAN traffic in both through deadUpstream in lockstep,
// and returns both timelines and the daemon's reactions. Lockstep gives the
// seed lab the very same outage and keeps the demo short.
func watchScenario(r *runner, bin string) watchRun {
	r.scope = "dead upstream"
	mark := len(r.cleanups) // this scenario's cleanups come after
	li := newLab(r, lab.Checked(lab.TwoISPs), bin)
	w := li.StartWatch(bin)
	ls := newLab(r, lab.Seed, "")

	// The traffic's bound: every step at its longest.
	var bound time.Duration
	for _, e := range deadUpstream {
		bound += e.hold + time.Second
		if e.react != nil {
			bound += reactTimeout
		}
	}
	ti, ts := startTraffic(r, li, bound), startTraffic(r, ls, bound)

	var run watchRun
	logged := 0 // transition lines of the daemon's log already shown
	for i, e := range deadUpstream {
		begin := time.Now()
		if i == 0 {
			// From the first traffic on: the ifisp lab's TCP connection
			// was made while the seed lab's traffic started.
			begin = ti.t0
		}
		spoofedI, spoofedS := li.Spoofed(), ls.Spoofed()
		e.do(li)
		happened := time.Now()
		e.do(ls)
		var re reaction
		if e.react != nil {
			// WaitFor polls every 10 ms: the daemon's reaction time to
			// within that. It withdraws after 1 s, restores after 3 s.
			e.react(w)
			re.after = time.Since(happened)
		}
		// Who carries the seed lab's flows once the event is over.
		time.Sleep(time.Until(begin.Add(500 * time.Millisecond)))
		counts := seen(ls)
		time.Sleep(e.hold)
		after := seen(ls)

		si := ti.measure(e.name, begin, spoofedI)
		// The daemon's own probes reach both ISPs' edges, ~10 a second per
		// link, so counting there would see both: ask routing instead.
		si.carries = routedVia(li)
		ss := ts.measure(e.name, begin, spoofedS)
		ss.carries = carrier(after[0]-counts[0], after[1]-counts[1])
		run.ifisp, run.seed = append(run.ifisp, si), append(run.seed, ss)

		lines := transitions(w.Log())
		re.log = lines[logged:]
		logged = len(lines)
		run.reactions = append(run.reactions, re)
	}
	run.seedGap = ts.ping.Gap(ts.t0, time.Now())
	ti.stop()
	ts.stop()
	w.Stop()
	r.cleanupFrom(mark)
	return run
}

// transitions returns the daemon's log lines that tell a state change.
func transitions(log string) []string {
	var lines []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, " -> ") {
			lines = append(lines, line)
		}
	}
	return lines
}
