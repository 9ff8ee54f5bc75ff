package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/status"
)

func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flagSet("status", "", stdout)
	asJSON := fs.Bool("json", false, "print the status as JSON (pkg/status.Status, documented in README.md)")
	noFlows := fs.Bool("no-flows", false, "do not count each link's conntrack entries (two dumps the kernel filters by the link's marks)")
	root := fs.String("root", "/", "read rt_tables below `DIR`")
	if ok, code := parse(fs, args, stderr, 0, 0); !ok {
		return code
	}
	h, err := policy.NewHandle()
	if err != nil {
		fmt.Fprintf(stderr, "ifisp status: opening netlink: %v\n", err)
		return 1
	}
	defer h.Close()
	s, err := status.Gather(h, status.Options{Flows: !*noFlows, Root: *root})
	if err != nil {
		fmt.Fprintf(stderr, "ifisp status: %v\n", err)
		return 1
	}
	if *asJSON {
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "ifisp status: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", b)
		return exitCode(s)
	}
	if err := status.Write(stdout, s); err != nil {
		fmt.Fprintf(stderr, "ifisp status: %v\n", err)
		return 1
	}
	return exitCode(s)
}

// exitCode is status's exit status: 0 when the kernel has every link's
// plan and nothing foreign among ifisp's pieces, 3 when it does not (so a
// monitoring system can alert on it; 1 is an error, 2 a bad command line).
func exitCode(s *status.Status) int {
	if s.Converged() {
		return 0
	}
	return 3
}
