// Binary ifisp-watch is ifisp's health monitor (package watch), run by
// systemd: it probes each ISP link registered by the ifupdown hooks through
// the link's own address, withdraws the main-table defaults of a link whose
// upstream dies or whose carrier drops, and restores them when it heals.
//
// SIGHUP reads the registry again; SIGTERM restores what it withdrew and
// exits. The run directory is /run/ifisp, or IFISP_RUN_DIR.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/ifisp/ifisp/pkg/watch"
)

func main() {
	notifyDir := pflag.String("notify-dir", "/etc/ifisp/notify.d", "run the executables in `DIR` on every transition")
	pflag.Parse()
	if pflag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ifisp-watch: unexpected argument %q (it takes options only)\n", pflag.Arg(0))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	logger := log.New(os.Stderr, "ifisp-watch: ", 0)
	if err := watch.Run(ctx, watch.Options{NotifyDir: *notifyDir, Log: logger, Reload: hup}); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}
