package main

import (
	"bufio"
	"fmt"
	"net"
	"time"
)

// event prints one TCP event with its wall-clock time, for the timeline.
func event(format string, args ...any) {
	fmt.Printf("tcp: %d %s\n", time.Now().UnixMilli(), fmt.Sprintf(format, args...))
}

// tcpServer echoes lines and reports which address each connection came
// from: that is the address the LAN host was NATed to, so the link.
func tcpServer(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("tcp-server:", err)
		return
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		event("connected as %s", c.RemoteAddr().(*net.TCPAddr).IP)
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			s := bufio.NewScanner(c)
			for s.Scan() {
				fmt.Fprintln(c, s.Text())
			}
		}()
	}
}

// tcpClient keeps one connection busy (a line every 50 ms, echoed back) for
// d, and reconnects when it breaks.
func tcpClient(addr string, d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		r := bufio.NewReader(c)
		for time.Now().Before(end) {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err = fmt.Fprintln(c, "x"); err == nil {
				_, err = r.ReadString('\n')
			}
			if err != nil {
				event("broke (%v)", shortErr(err))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
}

func shortErr(err error) string {
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return "stalled 2s"
	}
	if oe, ok := err.(*net.OpError); ok {
		return oe.Err.Error()
	}
	return err.Error()
}
