// Command demo shows, in the lab, what the LAN notices when the preferred
// ISP goes down and comes back: once with ifisp's hooks, once with the seed
// recipe (SNAT and `conntrack -D --src-nat` in up/down lines), side by side.
// Then the preferred ISP's upstream dies behind a modem that keeps carrier,
// with the health daemon ifisp-watch beside the seed recipe (watch.go).
//
// It needs root (it builds network namespaces), cleans up after itself and
// sends traffic only between its own namespaces. Run it with `make demo`.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
)

const (
	pingInterval = 50 * time.Millisecond // 20 pps
	tcpPort      = "7000"
)

func main() {
	if len(os.Args) > 1 {
		// The demo's own traffic helpers, run inside the lab's namespaces.
		switch os.Args[1] {
		case "tcp-server":
			tcpServer(os.Args[2])
			return
		case "tcp-client":
			d, _ := time.ParseDuration(os.Args[3])
			tcpClient(os.Args[2], d)
			return
		}
		fmt.Fprintln(os.Stderr, "usage: demo (as root)")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root: it builds network namespaces (try: sudo make demo)")
		os.Exit(1)
	}
	r := &runner{}
	defer r.cleanup()
	bin, err := os.MkdirTemp("", "ifisp-demo-")
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(func() { os.RemoveAll(bin) })
	if err := lab.Build(bin); err != nil {
		r.Fatal(err)
	}

	fmt.Println("LAN host 10.1.0.10 pings 192.0.2.100 at 20 pps and keeps a TCP connection to it;")
	fmt.Println("ISP B (wanb) is preferred, ISP A (wana) the backup. Each step lasts 4 s.")
	ifisp := scenario(r, "ifisp", lab.TwoISPs, bin, byHand)
	seed := scenario(r, "seed recipe", lab.Seed, "", byHand)
	printTimelines(ifisp, seed)

	deadUpstreamPart(r, bin)
}

// happening is what starts one step.
type happening struct {
	name string
	do   func(l *lab.Lab)
}

// byHand takes the preferred link down and up with ifupdown.
var byHand = []happening{
	{"both up", func(*lab.Lab) {}},
	{"ifdown wanb", func(l *lab.Lab) { l.MustIfdown("wanb") }},
	{"ifup wanb", func(l *lab.Lab) { l.MustIfup("wanb") }},
}

// step is one row of a timeline.
type step struct {
	event    string
	carries  string // which ISP the LAN's packets left by
	lost     int    // ping replies lost
	spoofed  int    // packets the ISPs dropped as spoofed
	tcp      string // what the TCP connection did
	received int
	sent     int
	gap      time.Duration // the ping's longest time without a reply
}

// scenario brings both ISPs up with interfaces (with ifisp's hooks from bin
// when bin is set), runs the LAN traffic through the events, and returns
// the timeline.
func scenario(r *runner, name, interfaces, bin string, events []happening) []step {
	r.scope = name
	mark := len(r.cleanups) // this scenario's cleanups come after
	l := newLab(r, interfaces, bin)
	const nSteps = 3
	const stepTime = 4 * time.Second
	tr := startTraffic(r, l, nSteps*stepTime)

	var steps []step
	for i, e := range events {
		begin := time.Now()
		spoofed := l.Spoofed()
		e.do(l)
		// Who carries the flows once the event is over.
		time.Sleep(500 * time.Millisecond)
		counts := seen(l)
		time.Sleep(time.Until(tr.t0.Add(time.Duration(i+1) * stepTime)))
		after := seen(l)
		s := tr.measure(e.name, begin, spoofed)
		s.carries = carrier(after[0]-counts[0], after[1]-counts[1])
		steps = append(steps, s)
	}
	tr.stop()
	r.cleanupFrom(mark)
	return steps
}

// newLab builds a lab with interfaces, ifisp's hooks from bin when bin is
// set, and both ISPs up.
func newLab(r *runner, interfaces, bin string) *lab.Lab {
	l := lab.New(r)
	if bin != "" {
		l.Install(bin)
	}
	l.Interfaces(interfaces)
	l.MustIfup("wana", "wanb")
	return l
}

// traffic is the LAN host's traffic in one lab: the ping and the TCP
// connection, both dated from t0.
type traffic struct {
	l              *lab.Lab
	ping           *lab.Pinger
	server, client *proc
	t0             time.Time
}

// startTraffic starts the LAN's ping and TCP connection, bounded to about d
// (stop ends them sooner).
func startTraffic(r *runner, l *lab.Lab, d time.Duration) *traffic {
	self, err := os.Executable()
	if err != nil {
		r.Fatal(err)
	}
	tr := &traffic{l: l}
	tr.server = start(r, l.Inet, self, "tcp-server", lab.Internet+":"+tcpPort)
	time.Sleep(100 * time.Millisecond)
	tr.client = start(r, l.LAN, self, "tcp-client", lab.Internet+":"+tcpPort, (d + time.Second).String())
	tr.ping = l.StartPing(l.LAN, lab.Internet, pingInterval, int(d/pingInterval)+10)
	tr.t0 = time.Now()
	return tr
}

// measure returns the step from begin till now, all but who carried it;
// spoofed is l.Spoofed() at begin.
func (tr *traffic) measure(event string, begin time.Time, spoofed int) step {
	s := step{event: event, spoofed: tr.l.Spoofed() - spoofed}
	s.sent, s.received = tr.ping.Count(begin, time.Now())
	s.lost = s.sent - s.received
	// From a second before: the last reply before the event counts.
	s.gap = tr.ping.Gap(begin.Add(-time.Second), time.Now())
	s.tcp = timeline(tr.t0, begin.Sub(tr.t0), time.Since(tr.t0), tr.server, tr.client)
	return s
}

func (tr *traffic) stop() {
	tr.ping.Stop()
	tr.client.stop()
	tr.server.stop()
}

// routedVia says which ISP the router routes the LAN host's packets to.
func routedVia(l *lab.Lab) string {
	out := l.Must(l.Router, "ip", "route", "get", lab.Internet, "from", lab.LANHost, "iif", "lan0")
	switch {
	case strings.Contains(out, "dev wana"):
		return "A"
	case strings.Contains(out, "dev wanb"):
		return "B"
	}
	return "none"
}

// seen returns the legit IPv4 packets ISP A and ISP B have seen.
func seen(l *lab.Lab) [2]int {
	return [2]int{l.Seen(&l.A, 4).Legit, l.Seen(&l.B, 4).Legit}
}

func carrier(a, b int) string {
	switch {
	case a > 0 && b > 0:
		return "A and B"
	case a > 0:
		return "A"
	case b > 0:
		return "B"
	}
	return "none"
}

func printTimelines(ifisp, seed []step) {
	w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "\nevent\t| ifisp: carried by\tlost\tspoofed\ttcp\t| seed: carried by\tlost\tspoofed\ttcp")
	for i := range ifisp {
		a, b := ifisp[i], seed[i]
		fmt.Fprintf(w, "%s\t| %s\t%d/%d\t%d\t%s\t| %s\t%d/%d\t%d\t%s\n", a.event,
			a.carries, a.lost, a.sent, a.spoofed, a.tcp, b.carries, b.lost, b.sent, b.spoofed, b.tcp)
	}
	w.Flush()
	for _, tl := range []struct {
		name  string
		steps []step
	}{{"ifisp", ifisp}, {"seed", seed}} {
		last := tl.steps[len(tl.steps)-1]
		verdict := "recovered: the last step's pings were answered"
		if last.received < last.sent/2 {
			verdict = "STUCK: the LAN's ping never recovered"
		}
		spoofed := 0
		for _, s := range tl.steps {
			spoofed += s.spoofed
		}
		fmt.Printf("%-6s %d spoofed packets in all; %s\n", tl.name+":", spoofed, verdict)
	}
}

// proc is a bounded helper process inside a namespace whose output lines
// are kept with their arrival times.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []line
	done  chan struct{}
}

type line struct {
	at   time.Time
	text string
}

func start(r *runner, ns string, args ...string) *proc {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		r.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	p := &proc{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		r.Fatal(err)
	}
	go p.read(out)
	r.Cleanup(p.stop)
	return p
}

func (p *proc) read(out io.Reader) {
	defer close(p.done)
	s := bufio.NewScanner(out)
	for s.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, line{time.Now(), s.Text()})
		p.mu.Unlock()
	}
}

func (p *proc) stop() {
	if p.cmd.ProcessState == nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// timeline merges the TCP helpers' events between from and to (after t0)
// in the order they happened.
func timeline(t0 time.Time, from, to time.Duration, procs ...*proc) string {
	type ev struct {
		at   int64
		text string
	}
	var evs []ev
	for _, p := range procs {
		p.mu.Lock()
		for _, l := range p.lines {
			if rest, ok := strings.CutPrefix(l.text, "tcp: "); ok {
				at, text, _ := strings.Cut(rest, " ")
				ms, _ := strconv.ParseInt(at, 10, 64)
				if d := time.UnixMilli(ms).Sub(t0); d >= from && d < to {
					evs = append(evs, ev{ms, text})
				}
			}
		}
		p.mu.Unlock()
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	var texts []string
	for _, e := range evs {
		texts = append(texts, e.text)
	}
	if len(texts) == 0 {
		return "kept"
	}
	return strings.Join(texts, ", ")
}

// runner lets the demo use the lab outside a test: Fatal cleans up and
// exits.
type runner struct {
	scope    string
	cleanups []func()
}

func (r *runner) Helper()                      {}
func (r *runner) Cleanup(f func())             { r.cleanups = append(r.cleanups, f) }
func (r *runner) Fatal(args ...any)            { r.fail(fmt.Sprint(args...)) }
func (r *runner) Fatalf(f string, args ...any) { r.fail(fmt.Sprintf(f, args...)) }

func (r *runner) fail(msg string) {
	fmt.Fprintf(os.Stderr, "demo: %s: %s\n", r.scope, msg)
	r.cleanup()
	os.Exit(1)
}

func (r *runner) cleanup() { r.cleanupFrom(0) }

// cleanupFrom runs, newest first, the cleanups registered after the first n.
func (r *runner) cleanupFrom(n int) {
	for i := len(r.cleanups) - 1; i >= n; i-- {
		r.cleanups[i]()
	}
	r.cleanups = r.cleanups[:n]
}
