package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"
)

// flagSet returns the flags of subcommand name, whose usage line is
// "ifisp NAME ARGS".
func flagSet(name, args string, stdout io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("ifisp "+name, pflag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "usage: ifisp %s [OPTIONS] %s\n\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}

// quietly parses args without pflag's own messages: parse reports on one
// line.
func quietly(fs *pflag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	defer func() { fs.SetOutput(out); fs.Usage = usage }()
	return fs.Parse(args)
}

// parse parses args into fs and says whether to go on; when not, status
// is the exit status (0 for --help, 2 for a bad command line).
func parse(fs *pflag.FlagSet, args []string, stderr io.Writer, minArgs, maxArgs int) (ok bool, status int) {
	err := quietly(fs, args)
	switch {
	case errors.Is(err, pflag.ErrHelp):
		fs.Usage()
		return false, 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v (see %s --help)\n", fs.Name(), err, fs.Name())
		return false, 2
	case fs.NArg() < minArgs:
		fmt.Fprintf(stderr, "%s: too few arguments (see %s --help)\n", fs.Name(), fs.Name())
		return false, 2
	case fs.NArg() > maxArgs:
		fmt.Fprintf(stderr, "%s: unexpected argument %q (see %s --help)\n", fs.Name(), fs.Arg(maxArgs), fs.Name())
		return false, 2
	}
	return true, 0
}

// count writes n things: "1 file", "2 files".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
