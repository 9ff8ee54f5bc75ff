package main

import (
	"fmt"
	"io"

	"github.com/ifisp/ifisp/pkg/explain"
	"github.com/ifisp/ifisp/pkg/policy"
)

func explainCmd(args []string, stdout, stderr io.Writer) int {
	fs := flagSet("explain", "IFACE [FILE]", stdout)
	root := fs.String("root", "/", "read rt_tables and rt_protos below `DIR`")
	if ok, status := parse(fs, args, stderr, 1, 2); !ok {
		return status
	}
	path := defaultFile
	if fs.NArg() == 2 {
		path = fs.Arg(1)
	}
	h, err := policy.NewHandle()
	if err != nil {
		fmt.Fprintf(stderr, "ifisp explain: opening netlink: %v\n", err)
		return 1
	}
	defer h.Close()
	if err := explain.Write(stdout, path, fs.Arg(0), explain.Options{Root: *root, Handle: h}); err != nil {
		fmt.Fprintf(stderr, "ifisp explain: %v\n", err)
		return 1
	}
	return 0
}
