// Binary ifisp-lease makes a WAN follow the address its DHCP client or
// pppd learns after ifup (package lease): dhclient's exit hook runs
// `ifisp-lease dhclient`, pppd's ip-up.d and ip-down.d run `ifisp-lease
// ppp-up` and `ifisp-lease ppp-down`, each with the client's environment.
// It writes one line of what it did, to standard error and to syslog.
//
// Its exit status is 1 when it failed, but the dhclient hook ignores it:
// a status other than 0 there would make dhclient decline the lease.
package main

import (
	"fmt"
	"log/syslog"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ifisp/ifisp/pkg/lease"
	"github.com/ifisp/ifisp/pkg/rundir"
)

func main() {
	timeout := pflag.Duration("lock-timeout", rundir.DefaultLockTimeout, "wait at most this long for the lock the hooks and ifisp-watch hold")
	pflag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: ifisp-lease [--lock-timeout DURATION] dhclient|ppp-up|ppp-down\n\nRun by dhclient's exit hook and pppd's ip-up.d and ip-down.d, with the client's environment.\n\n")
		pflag.PrintDefaults()
	}
	pflag.Parse()
	if pflag.NArg() != 1 {
		pflag.Usage()
		os.Exit(2)
	}
	var e lease.Event
	var err error
	switch pflag.Arg(0) {
	case "dhclient":
		e, err = lease.Dhclient(os.Environ())
	case "ppp-up", "ppp-down":
		e, err = lease.PPP(os.Environ(), pflag.Arg(0) == "ppp-up")
	default:
		fmt.Fprintf(os.Stderr, "ifisp-lease: unknown client %q (want dhclient, ppp-up or ppp-down)\n", pflag.Arg(0))
		os.Exit(2)
	}
	var did string
	switch {
	case err != nil:
		err = fmt.Errorf("%s: ignored, the link keeps what it has: %w", e, err)
	case e.Kind == lease.Ignored:
		os.Exit(0)
	default:
		if did, err = lease.Apply(e, "/", *timeout); err != nil {
			err = fmt.Errorf("%s: %w", e, err)
		}
	}
	if err != nil {
		say(syslog.LOG_ERR, strings.ReplaceAll(err.Error(), "\n", "; "))
		os.Exit(1)
	}
	say(syslog.LOG_NOTICE, fmt.Sprintf("%s: %s", e, did))
}

// say writes msg on one line to standard error, and to syslog when there
// is one (dhclient's and pppd's standard error go nowhere).
func say(p syslog.Priority, msg string) {
	fmt.Fprintf(os.Stderr, "ifisp-lease: %s\n", msg)
	if w, err := syslog.New(p|syslog.LOG_DAEMON, "ifisp-lease"); err == nil {
		w.Write([]byte(msg))
		w.Close()
	}
}
