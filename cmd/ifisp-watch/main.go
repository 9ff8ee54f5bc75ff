// Binary ifisp-watch is ifisp's health monitor (package watch), run by
// systemd: it probes each ISP link registered by the ifupdown hooks through
// the link's own address, withdraws the main-table defaults of a link whose
// upstream dies or whose carrier drops, and restores them when it heals.
//
// SIGHUP reads the registry again; SIGTERM restores what it withdrew and
// exits. The run directory is /run/ifisp, or IFISP_RUN_DIR. Every few
// seconds it writes the links' health, for node_exporter's textfile
// collector, to RUNDIR/ifisp-watch.prom (--metrics, --no-metrics). It
// sends the router advertisements of the links' isp-lan prefixes on their
// LAN interfaces, deprecating a failed ISP's (RFC 8475; --no-ra: none).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/ifisp/ifisp/pkg/rundir"
	"github.com/ifisp/ifisp/pkg/watch"
)

func main() {
	notifyDir := pflag.String("notify-dir", "/etc/ifisp/notify.d", "run the executables in `DIR` on every transition")
	metrics := pflag.String("metrics", filepath.Join(rundir.Dir(), "ifisp-watch.prom"), "write the links' health to `FILE` for node_exporter's textfile collector (Prometheus text format)")
	noMetrics := pflag.Bool("no-metrics", false, "write no metrics file")
	every := pflag.Duration("metrics-interval", watch.DefaultMetricsInterval, "rewrite the metrics file and the probe figures of watch.json this often")
	noRA := pflag.Bool("no-ra", false, "send no router advertisements for the links' isp-lan prefixes (another sender announces them)")
	pflag.Parse()
	if *noMetrics {
		*metrics = ""
	}
	if pflag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ifisp-watch: unexpected argument %q (it takes options only)\n", pflag.Arg(0))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	logger := log.New(os.Stderr, "ifisp-watch: ", 0)
	if err := watch.Run(ctx, watch.Options{NotifyDir: *notifyDir, Log: logger, Reload: hup, Metrics: *metrics, MetricsInterval: *every, NoRA: *noRA}); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}
