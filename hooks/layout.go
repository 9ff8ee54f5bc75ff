// Package hooks is hooks/layout as data: which of ifisp's binaries
// ifupdown runs from which /etc/network folder, under which run-parts
// name. `make install`, the Debian package, the lab and `ifisp explain`
// all read the one file.
package hooks

import (
	_ "embed"
	"fmt"
	"strings"
)

//go:embed layout
var layout string

// Hook is one line of the layout.
type Hook struct {
	Folder, Name, Binary string
}

// Layout returns the layout's lines, in its order.
func Layout() ([]Hook, error) {
	var hooks []Hook
	for _, line := range strings.Split(layout, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("hooks/layout: %q: want FOLDER NAME BINARY", line)
		}
		hooks = append(hooks, Hook{f[0], f[1], f[2]})
	}
	return hooks, nil
}

// Binaries returns the names of the hook binaries, each once.
func Binaries() map[string]bool {
	hooks, _ := Layout() // the test below keeps it parseable
	b := map[string]bool{}
	for _, h := range hooks {
		b[h.Binary] = true
	}
	return b
}
