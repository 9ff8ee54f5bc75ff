package main

import (
	"fmt"
	"io"

	"github.com/ifisp/ifisp/pkg/converge"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/rundir"
)

// syncCmd puts back what of the up links' plans the kernel lacks, once:
// what ifisp-watch does on every change, for routers without it, or right
// after another tool reloads the firewall.
func syncCmd(args []string, stdout, stderr io.Writer) int {
	fs := flagSet("sync", "", stdout)
	timeout := fs.Duration("lock-timeout", rundir.DefaultLockTimeout, "wait at most this long for the lock the hooks and ifisp-watch hold")
	if ok, code := parse(fs, args, stderr, 0, 0); !ok {
		return code
	}
	lk, err := rundir.TakeLock("ifisp sync", *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "ifisp sync: %v\n", err)
		return 1
	}
	defer lk.Release()
	h, err := policy.NewHandle()
	if err != nil {
		fmt.Fprintf(stderr, "ifisp sync: opening netlink: %v\n", err)
		return 1
	}
	defer h.Close()
	links, err := registry.List()
	if err != nil {
		fmt.Fprintf(stderr, "ifisp sync: reading the registry: %v\n", err)
		return 1
	}
	repaired, err := converge.Repair(h, converge.Exec, links)
	for _, p := range repaired {
		fmt.Fprintf(stdout, "put back: %s\n", p)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ifisp sync: %v\n", err)
		return 1
	}
	return 0
}
