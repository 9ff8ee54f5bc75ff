package main

import (
	"fmt"
	"io"

	"github.com/ifisp/ifisp/pkg/ifcheck"
	"github.com/ifisp/ifisp/pkg/policy"
)

// defaultFile is ifupdown's interfaces file.
const defaultFile = "/etc/network/interfaces"

func check(args []string, stdout, stderr io.Writer) int {
	fs := flagSet("check", "[FILE]", stdout)
	root := fs.String("root", "/", "read rt_tables below `DIR` (a system image, a chroot)")
	kernel := fs.Bool("kernel", false, "also check against the running kernel, as if-pre-up.d does: tables other links hold now, metrics other defaults take")
	hints := fs.Bool("hints", false, "also print advice that does not make the file wrong")
	quiet := fs.BoolP("quiet", "q", false, "print nothing when the file is clean")
	if ok, status := parse(fs, args, stderr, 0, 1); !ok {
		return status
	}
	path := defaultFile
	if fs.NArg() == 1 {
		path = fs.Arg(0)
	}
	opt := ifcheck.Options{Root: *root}
	if *kernel {
		h, err := policy.NewHandle()
		if err != nil {
			fmt.Fprintf(stderr, "ifisp check: opening netlink for --kernel: %v\n", err)
			return 1
		}
		defer h.Close()
		opt.Kernel = ifcheck.KernelChecks(h)
	}
	r, err := ifcheck.Check(path, opt)
	if err != nil {
		fmt.Fprintf(stderr, "ifisp check: %v\n", err)
		return 1
	}
	if *hints {
		for _, h := range r.Hints {
			fmt.Fprintf(stderr, "%s (hint)\n", h)
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprint(stderr, r)
		return 1
	}
	if !*quiet {
		fmt.Fprintf(stdout, "%s: ok (%s in %s)\n", path, count(len(r.Links), "ifisp stanza"), count(len(r.File.Files), "file"))
	}
	return 0
}
