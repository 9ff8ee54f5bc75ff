package lab

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The lab's traffic helpers run as the test (or demo) binary itself,
// re-executed inside a namespace with helperEnv naming the helper; HelperMain
// must be the first thing its main or TestMain does.
const helperEnv = "IFISP_LAB_HELPER"

// flowEvery is the request period of every flow: 50 per second.
const flowEvery = 20 * time.Millisecond

// FlowPort is where the internet host's echo servers listen (TCP and UDP).
const FlowPort = 7000

// HelperMain runs a traffic helper and exits when this process was started
// as one; otherwise it returns at once.
func HelperMain() {
	args := strings.Fields(os.Getenv(helperEnv))
	if len(args) == 0 {
		return
	}
	var err error
	switch args[0] {
	case "echo":
		err = echoServers(args[1])
	case "client":
		d, _ := time.ParseDuration(args[3])
		err = client(args[1], args[2], d)
	case "udp-burst":
		n, _ := strconv.Atoi(args[2])
		err = udpBurst(args[1], n, args[3:])
	case "whoami":
		err = whoami(args[1])
	case "dial":
		n, _ := strconv.Atoi(args[2])
		err = dial(args[1], n)
	case "ra-capture":
		err = raCapture()
	case "ra-send":
		err = raSend(args[1], args[2])
	case "ra-router":
		err = raRouter(args[1], args[2], args[3:])
	default:
		err = fmt.Errorf("unknown helper %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// echoServers echoes TCP lines and UDP datagrams on addr until killed.
func echoServers(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			s := bufio.NewScanner(c)
			for s.Scan() {
				fmt.Fprintln(c, s.Text())
			}
		}()
	}
}

// clientLine is one line of a flow client's output, as JSON: a request
// sent (Seq, Sent), its answer (Seq, Answered), or a TCP connection found
// broken (Reset).
type clientLine struct {
	Seq      int       `json:"seq"`
	Sent     time.Time `json:"sent,omitzero"`
	Answered time.Time `json:"answered,omitzero"`
	Reset    time.Time `json:"reset,omitzero"`
}

// client sends a request every 20 ms for d over one flow (proto "udp" or
// "tcp": one fixed source port; TCP connects again when the connection
// breaks) and prints a clientLine for each request as it sends it, for
// each answer as it comes, and for each broken connection, so that the
// test sees the flow live. Sending and reading are apart: a late answer
// delays no request, and a request that is late for its slot (a busy
// machine) is sent at the next one, not in a burst to catch up.
func client(proto, addr string, d time.Duration) error {
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(l clientLine) {
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(l); err != nil {
			os.Exit(1) // the test is gone
		}
	}
	var conn net.Conn
	var broken chan struct{} // closed when conn's reader ends
	dial := func() {
		c, err := net.DialTimeout(proto, addr, time.Second)
		if err != nil {
			return
		}
		conn, broken = c, make(chan struct{})
		go readAnswers(proto, c, broken, emit)
	}
	reset := func() {
		conn.Close()
		conn = nil
		emit(clientLine{Reset: time.Now()})
	}
	// UDP keeps one socket (one conntrack flow) however its packets fare.
	dial()
	tick := time.NewTicker(flowEvery)
	defer tick.Stop()
	end := time.Now().Add(d)
	for seq := 0; time.Now().Before(end); seq++ {
		if seq > 0 {
			<-tick.C
		}
		if conn != nil {
			select {
			case <-broken:
				reset()
			default:
			}
		}
		emit(clientLine{Seq: seq, Sent: time.Now()})
		if conn == nil && proto == "tcp" {
			dial()
		}
		if conn == nil {
			continue
		}
		conn.SetWriteDeadline(time.Now().Add(5 * flowEvery))
		if _, err := fmt.Fprintf(conn, "%d\n", seq); err != nil && proto == "tcp" {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				reset()
			}
		}
	}
	// The last answers are on their way.
	time.Sleep(10 * flowEvery)
	return nil
}

// readAnswers reports each answer on c until c breaks or is closed. A UDP
// socket outlives the errors ICMP brings it (no route, port unreachable).
func readAnswers(proto string, c net.Conn, broken chan struct{}, emit func(clientLine)) {
	defer close(broken)
	answer := func(line string) {
		if n, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
			emit(clientLine{Seq: n, Answered: time.Now()})
		}
	}
	if proto == "tcp" {
		s := bufio.NewScanner(c)
		for s.Scan() {
			answer(s.Text())
		}
		return
	}
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil {
			answer(string(buf[:n]))
		}
	}
}

// udpBurst opens n UDP flows to addr, each from its own source port, and
// sends one datagram on each. Flows come in blocks of 40,000, each from the
// next of srcs and to the next destination port: SNAT to one address can
// map at most 64,512 flows to one destination.
func udpBurst(addr string, n int, srcs []string) error {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	if len(srcs) == 0 {
		srcs = []string{""}
	}
	const block = 40000 // source ports 20000..59999
	for i := 0; i < n; i++ {
		local := &net.UDPAddr{IP: net.ParseIP(srcs[i/block%len(srcs)]), Port: 20000 + i%block}
		remote := &net.UDPAddr{IP: raddr.IP, Port: raddr.Port + i/block}
		c, err := net.DialUDP("udp", local, remote)
		if err != nil {
			return err
		}
		c.Write([]byte("x\n"))
		c.Close()
	}
	return nil
}

// helper starts this binary as a traffic helper in namespace ns; line, if
// not nil, gets each line the helper prints. The channel is closed when its
// output has ended.
func (l *Lab) helper(ns string, line func(string), args ...string) (*exec.Cmd, <-chan struct{}) {
	l.t.Helper()
	self, err := os.Executable()
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, self)
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, " "))
	out, err := cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	l.start(cmd)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := bufio.NewScanner(out)
		for s.Scan() {
			if line != nil {
				line(s.Text())
			}
		}
	}()
	return cmd, done
}

// EchoServers starts the internet host's TCP and UDP echo servers on
// FlowPort; they run until the lab is removed.
func (l *Lab) EchoServers() {
	l.t.Helper()
	l.EchoServersAt(l.Inet, Internet)
}

// EchoServersAt starts TCP and UDP echo servers on addr, port FlowPort, in
// namespace ns (the LAN host's, for a port forward); they run until the lab
// is removed.
func (l *Lab) EchoServersAt(ns, addr string) {
	l.t.Helper()
	l.server(ns, "echo servers", FlowPort, "echo", net.JoinHostPort(addr, strconv.Itoa(FlowPort)))
}

// server starts the helper args in namespace ns, what for messages, and
// waits until it listens on TCP port.
func (l *Lab) server(ns, what string, port int, args ...string) {
	l.t.Helper()
	l.helper(ns, nil, args...)
	for range 100 {
		if out, _ := l.Exec(ns, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port)); out != "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.t.Fatalf("%s did not start", what)
}

// Flow is a running client of one flow from the LAN host.
type Flow struct {
	l    *Lab
	cmd  *exec.Cmd
	done <-chan struct{} // the client's output has ended
	ping *Pinger         // an ICMP flow's

	mu     sync.Mutex
	reqs   Requests
	index  map[int]int // Seq -> place in reqs
	resets int
	bad    string // a line that was not a clientLine
	end    time.Time
}

// StartFlow starts a flow ("icmp", "udp" or "tcp") from the LAN host to the
// internet host, one request every 20 ms, for d at most: it stops by
// itself then, or earlier with Stop, or with the lab. ICMP is ping itself
// (one echo id: one conntrack flow); UDP and TCP go to the echo servers.
// Its requests can be read while it runs.
func (l *Lab) StartFlow(proto string, d time.Duration) *Flow {
	l.t.Helper()
	if proto == "icmp" {
		return &Flow{l: l, ping: l.StartPing(l.LAN, Internet, flowEvery, int(d/flowEvery))}
	}
	return l.StartFlowFrom(l.LAN, proto, net.JoinHostPort(Internet, strconv.Itoa(FlowPort)), d)
}

// StartFlowFrom starts a UDP or TCP flow as StartFlow does, from namespace
// ns to addr ("host:port"): the internet host's flow to a port forward.
func (l *Lab) StartFlowFrom(ns, proto, addr string, d time.Duration) *Flow {
	l.t.Helper()
	f := &Flow{l: l, index: map[int]int{}}
	f.cmd, f.done = l.helper(ns, f.line, "client", proto, addr, d.String())
	return f
}

// line takes one line of the client's output.
func (f *Flow) line(s string) {
	var c clientLine
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		if f.bad == "" {
			f.bad = s
		}
		return
	}
	switch {
	case !c.Reset.IsZero():
		f.resets++
	case !c.Sent.IsZero():
		f.index[c.Seq] = len(f.reqs)
		f.reqs = append(f.reqs, Request{Seq: c.Seq, Sent: c.Sent})
	case !c.Answered.IsZero():
		if i, ok := f.index[c.Seq]; ok && f.reqs[i].Answered.IsZero() {
			f.reqs[i].Answered = c.Answered
		}
	}
}

// Requests returns the flow's requests so far.
func (f *Flow) Requests() Requests {
	if f.ping != nil {
		return f.ping.Requests()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append(Requests(nil), f.reqs...)
}

// Stop stops the flow now and returns what its client saw.
func (f *Flow) Stop() FlowResult {
	f.l.t.Helper()
	end := time.Now()
	if f.ping != nil {
		f.ping.Stop()
		return newFlowResult(f.ping.Requests(), 0, end)
	}
	stop(f.cmd)
	<-f.done
	return f.result(end)
}

// Wait waits for the flow's end and returns what its client saw.
func (f *Flow) Wait() FlowResult {
	f.l.t.Helper()
	if f.ping != nil {
		// ping exits 1 when a reply was missing: that is a result.
		f.ping.cmd.Wait()
		return newFlowResult(f.ping.Requests(), 0, time.Now())
	}
	<-f.done
	if err := f.cmd.Wait(); err != nil {
		f.l.t.Fatalf("flow client: %v", err)
	}
	return f.result(time.Now())
}

func (f *Flow) result(end time.Time) FlowResult {
	f.l.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bad != "" {
		f.l.t.Fatalf("flow client said %q", f.bad)
	}
	return newFlowResult(append(Requests(nil), f.reqs...), f.resets, end)
}

// UDPBurst opens n UDP flows from the LAN host to the internet host's echo
// server, one datagram each, and returns when they are sent. Past 40,000
// flows it needs more source addresses: srcs, added to the LAN host first.
func (l *Lab) UDPBurst(n int, srcs ...string) {
	l.t.Helper()
	cmd, done := l.helper(l.LAN, nil, append([]string{"udp-burst", fmt.Sprintf("%s:%d", Internet, FlowPort), strconv.Itoa(n)}, srcs...)...)
	<-done
	if err := cmd.Wait(); err != nil {
		l.t.Fatalf("udp burst: %v", err)
	}
}

// Pinger is a bounded ping from a namespace whose every request is dated:
// with -O -D ping prints a timestamped line for each, answered or not.
type Pinger struct {
	cmd      *exec.Cmd
	interval time.Duration
	mu       sync.Mutex
	out      []byte
}

func (p *Pinger) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, b...)
	return len(b), nil
}

// StartPing pings dst from ns every interval, count times at most, with
// ping's extra arguments (e.g. "-I", src); it stops by itself, or with the
// lab.
func (l *Lab) StartPing(ns, dst string, interval time.Duration, count int, extra ...string) *Pinger {
	l.t.Helper()
	p := &Pinger{interval: interval}
	args := []string{"netns", "exec", ns, "ping", "-n", "-D", "-O", "-W", "1",
		"-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64), "-c", strconv.Itoa(count)}
	p.cmd = exec.Command("ip", append(append(args, extra...), dst)...)
	p.cmd.Stdout = p
	l.start(p.cmd)
	return p
}

// PingRun pings dst from ns every 20 ms, with ping's extra arguments,
// until n requests in a row are answered, for within at most, and returns
// the requests it sent and whether it got its run. Its requests carry
// TracerSize bytes: the ISPs' edges count them as Counts.Tracer.
func (l *Lab) PingRun(ns, dst string, n int, within time.Duration, extra ...string) (Requests, bool) {
	l.t.Helper()
	p := l.StartPing(ns, dst, flowEvery, int(within/flowEvery)+1, append([]string{"-s", strconv.Itoa(TracerSize)}, extra...)...)
	defer p.Stop()
	for deadline := time.Now().Add(within); ; time.Sleep(10 * time.Millisecond) {
		if _, ok := p.Requests().Recovery(time.Time{}, n); ok {
			p.Stop()
			return p.Requests(), true
		}
		if time.Now().After(deadline) {
			p.Stop()
			return p.Requests(), false
		}
	}
}

// start starts cmd and makes sure it ends with the lab.
func (l *Lab) start(cmd *exec.Cmd) {
	l.t.Helper()
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { stop(cmd) })
}

// stop kills cmd if it still runs.
func stop(cmd *exec.Cmd) {
	if cmd.ProcessState == nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// Stop ends the ping if it still runs.
func (p *Pinger) Stop() { stop(p.cmd) }

// datedSeq matches a line of ping -D about one request: its date, and the
// line from the request's sequence number on.
var datedSeq = regexp.MustCompile(`(?m)^\[(\d+)\.(\d+)\] (.*icmp_seq=(\d+).*)$`)

// rtt is the round trip an answer's line gives.
var rtt = regexp.MustCompile(`time=([0-9.]+) ms`)

// Requests reads ping's output so far into its requests, in order. An
// answer's line dates the answer, and its round trip the request; ping
// says "no answer yet" one interval after sending; an ICMP error (no route)
// comes at once.
func (p *Pinger) Requests() Requests {
	p.mu.Lock()
	defer p.mu.Unlock()
	var reqs Requests
	index := map[int]int{}
	for _, m := range datedSeq.FindAllStringSubmatch(string(p.out), -1) {
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		usec, _ := strconv.ParseInt(m[2], 10, 64)
		at := time.Unix(sec, usec*1000)
		seq, _ := strconv.Atoi(m[4])
		i, ok := index[seq]
		if !ok {
			i = len(reqs)
			index[seq] = i
			sent := at
			if strings.Contains(m[3], "no answer yet") {
				sent = at.Add(-p.interval)
			}
			reqs = append(reqs, Request{Seq: seq, Sent: sent})
		}
		if strings.Contains(m[3], "bytes from") && reqs[i].Answered.IsZero() {
			reqs[i].Answered = at
			if r := rtt.FindStringSubmatch(m[3]); r != nil {
				ms, _ := strconv.ParseFloat(r[1], 64)
				reqs[i].Sent = at.Add(-time.Duration(ms * float64(time.Millisecond)))
			}
		}
	}
	return reqs
}

// Count returns how many requests ping sent between from and to, and how
// many of those were answered (in time, Request.OK).
func (p *Pinger) Count(from, to time.Time) (sent, received int) {
	return p.Requests().Count(from, to)
}

// Gap returns the longest time, between from and to, without an answered
// request: how long the pinged path was dead (Requests.Gap).
func (p *Pinger) Gap(from, to time.Time) time.Duration {
	return p.Requests().Gap(from, to)
}
