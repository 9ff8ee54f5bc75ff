// Binary ifisp is the operator's view of ifisp: `ifisp check` validates an
// interfaces file as the hooks will, before ifup (like `nginx -t`);
// `ifisp explain IFACE` prints the commands `ifup IFACE` would run,
// changing nothing; `ifisp status` shows the links that are up, their
// routing, NAT and health, from the registry, ifisp-watch and the kernel.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command is one subcommand: it returns the exit status.
type command struct {
	name, args, summary string
	run                 func(args []string, stdout, stderr io.Writer) int
}

var commands = []command{
	{"check", "[FILE]", "check FILE (default /etc/network/interfaces) as ifisp's hooks will; exit 0 only when clean", check},
	{"explain", "IFACE [FILE]", "print the commands `ifup IFACE` would run, changing nothing", explainCmd},
	{"status", "[--json]", "the ISP links that are up: carrier, addresses, routing, health, SNAT, flows; exit 3 when the kernel differs from their plans", statusCmd},
	{"sync", "", "put back what of the up links' plans the kernel lacks (after another tool reloaded the firewall)", syncCmd},
}

// run runs the subcommand args name: 0 on success, 1 when it found
// problems or failed, 2 for a bad command line.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "ifisp: unknown command %q (see ifisp --help)\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: ifisp COMMAND [OPTIONS]\n\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-22s %s\n", c.name+" "+c.args, c.summary)
	}
	fmt.Fprintf(w, "\nifisp COMMAND --help lists a command's options.\n")
}
