package lab

import (
	"bufio"
	"encoding/json"
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

// FlowResult is what one flow's client saw.
type FlowResult struct {
	Sent, Received int
	// TailSent and TailReceived cover the last second: a flow that is
	// stuck has TailReceived 0.
	TailSent, TailReceived int
	// Resets counts TCP connections that broke and were made again.
	Resets int
}

// client sends a request every 20 ms for d over one flow (proto "udp" or
// "tcp": one fixed source port; TCP reconnects when the connection breaks)
// and prints a FlowResult as JSON.
func client(proto, addr string, d time.Duration) error {
	const every = flowEvery
	start := time.Now()
	var res FlowResult
	var sentAt []time.Time
	answered := map[int]bool{}
	var conn net.Conn
	var r *bufio.Reader
	dial := func() {
		if conn != nil {
			conn.Close()
		}
		var err error
		if conn, err = net.DialTimeout(proto, addr, time.Second); err != nil {
			conn = nil
			return
		}
		r = bufio.NewReader(conn)
	}
	// UDP keeps one socket (one conntrack flow) however its packets fare.
	dial()
	for seq := 0; time.Since(start) < d; seq++ {
		time.Sleep(time.Until(start.Add(time.Duration(seq) * every)))
		sentAt = append(sentAt, time.Now())
		if conn == nil {
			if proto == "tcp" {
				dial()
				res.Resets++
			}
			if conn == nil {
				continue
			}
		}
		conn.SetDeadline(time.Now().Add(every * 5))
		_, err := fmt.Fprintf(conn, "%d\n", seq)
		if err == nil {
			var line string
			for err == nil {
				// Drain late answers of earlier requests too.
				if line, err = r.ReadString('\n'); err == nil {
					if n, e := strconv.Atoi(strings.TrimSpace(line)); e == nil {
						answered[n] = true
						if n == seq {
							break
						}
					}
				}
			}
		}
		if err != nil && proto == "tcp" {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				conn.Close()
				conn = nil
			}
		}
	}
	end := time.Now()
	for seq, at := range sentAt {
		res.Sent++
		tail := end.Sub(at) <= time.Second
		if tail {
			res.TailSent++
		}
		if answered[seq] {
			res.Received++
			if tail {
				res.TailReceived++
			}
		}
	}
	return json.NewEncoder(os.Stdout).Encode(res)
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

// helper starts this binary as a traffic helper in namespace ns.
func (l *Lab) helper(ns string, args ...string) (*exec.Cmd, *strings.Builder, *sync.WaitGroup) {
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
	var buf strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := bufio.NewScanner(out)
		for s.Scan() {
			buf.WriteString(s.Text() + "\n")
		}
	}()
	return cmd, &buf, &wg
}

// EchoServers starts the internet host's TCP and UDP echo servers on
// FlowPort; they run until the lab is removed.
func (l *Lab) EchoServers() {
	l.t.Helper()
	l.helper(l.Inet, "echo", fmt.Sprintf("%s:%d", Internet, FlowPort))
	for range 100 {
		if out, _ := l.Exec(l.Inet, "ss", "-Hltn", fmt.Sprintf("sport = :%d", FlowPort)); out != "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.t.Fatal("echo servers did not start")
}

// Flow is a running client of one flow from the LAN host.
type Flow struct {
	l    *Lab
	cmd  *exec.Cmd
	out  *strings.Builder
	wg   *sync.WaitGroup
	ping *Pinger // an ICMP flow's
}

// StartFlow starts a flow ("icmp", "udp" or "tcp") from the LAN host to the
// internet host for d, one request every 20 ms; it stops by itself. ICMP is
// ping itself (one echo id: one conntrack flow); UDP and TCP go to the echo
// servers.
func (l *Lab) StartFlow(proto string, d time.Duration) *Flow {
	l.t.Helper()
	if proto == "icmp" {
		return &Flow{l: l, ping: l.StartPing(l.LAN, Internet, flowEvery, int(d/flowEvery))}
	}
	cmd, out, wg := l.helper(l.LAN, "client", proto, fmt.Sprintf("%s:%d", Internet, FlowPort), d.String())
	return &Flow{l: l, cmd: cmd, out: out, wg: wg}
}

// Wait waits for the flow's end and returns what its client saw.
func (f *Flow) Wait() FlowResult {
	f.l.t.Helper()
	if f.ping != nil {
		// ping exits 1 when a reply was missing: that is a result.
		f.ping.cmd.Wait()
		return f.ping.result()
	}
	f.wg.Wait()
	var res FlowResult
	if err := f.cmd.Wait(); err != nil {
		f.l.t.Fatalf("flow client: %v", err)
	}
	if err := json.Unmarshal([]byte(f.out.String()), &res); err != nil {
		f.l.t.Fatalf("flow client said %q: %v", f.out.String(), err)
	}
	return res
}

// UDPBurst opens n UDP flows from the LAN host to the internet host's echo
// server, one datagram each, and returns when they are sent. Past 40,000
// flows it needs more source addresses: srcs, added to the LAN host first.
func (l *Lab) UDPBurst(n int, srcs ...string) {
	l.t.Helper()
	cmd, _, wg := l.helper(l.LAN, append([]string{"udp-burst", fmt.Sprintf("%s:%d", Internet, FlowPort), strconv.Itoa(n)}, srcs...)...)
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		l.t.Fatalf("udp burst: %v", err)
	}
}

// Pinger is a bounded ping from a namespace whose every request is dated:
// with -O -D ping prints a timestamped line for each, answered or not.
type Pinger struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	out []byte
}

func (p *Pinger) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, b...)
	return len(b), nil
}

// StartPing pings dst from ns every interval, count times at most; it
// stops by itself, or with the lab.
func (l *Lab) StartPing(ns, dst string, interval time.Duration, count int) *Pinger {
	l.t.Helper()
	p := &Pinger{}
	p.cmd = exec.Command("ip", "netns", "exec", ns, "ping", "-n", "-D", "-O", "-W", "1",
		"-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64), "-c", strconv.Itoa(count), dst)
	p.cmd.Stdout = p
	l.start(p.cmd)
	return p
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

// result is the whole ping as a flow: the tail is its last second.
func (p *Pinger) result() FlowResult {
	var last time.Time
	for _, r := range p.requests() {
		last = r.at
	}
	var r FlowResult
	r.Sent, r.Received = p.Count(time.Time{}, last.Add(time.Second))
	r.TailSent, r.TailReceived = p.Count(last.Add(-time.Second), last.Add(time.Second))
	return r
}

var datedSeq = regexp.MustCompile(`(?m)^\[(\d+)\.(\d+)\] (.*icmp_seq=(\d+).*)$`)

// request is one echo request as ping's output dates it.
type request struct {
	seq      int
	at       time.Time // of ping's first line about it
	answered bool
}

// requests reads ping's output so far, in order.
func (p *Pinger) requests() []request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var reqs []request
	index := map[int]int{}
	for _, m := range datedSeq.FindAllStringSubmatch(string(p.out), -1) {
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		usec, _ := strconv.ParseInt(m[2], 10, 64)
		seq, _ := strconv.Atoi(m[4])
		i, ok := index[seq]
		if !ok {
			i = len(reqs)
			index[seq] = i
			reqs = append(reqs, request{seq: seq, at: time.Unix(sec, usec*1000)})
		}
		reqs[i].answered = reqs[i].answered || strings.Contains(m[3], "bytes from")
	}
	return reqs
}

// Count returns how many requests ping sent between from and to, and how
// many of those were answered (then or later).
func (p *Pinger) Count(from, to time.Time) (sent, received int) {
	for _, r := range p.requests() {
		if !r.at.Before(from) && r.at.Before(to) {
			sent++
			if r.answered {
				received++
			}
		}
	}
	return sent, received
}

// Gap returns the longest time, between from and to, from one answered
// request to the next: how long the pinged path was dead.
func (p *Pinger) Gap(from, to time.Time) time.Duration {
	var gap time.Duration
	var prev time.Time
	for _, r := range p.requests() {
		if !r.answered || r.at.Before(from) || !r.at.Before(to) {
			continue
		}
		if !prev.IsZero() && r.at.Sub(prev) > gap {
			gap = r.at.Sub(prev)
		}
		prev = r.at
	}
	return gap
}
