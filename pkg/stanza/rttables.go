package stanza

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// tableFiles are the files iproute2 reads table names from, in the order it
// reads them; the first name found wins.
var tableFiles = []string{
	"etc/iproute2/rt_tables",
	"etc/iproute2/rt_tables.d/*.conf",
	"usr/share/iproute2/rt_tables",
}

// LookupTable resolves a routing table name to its number through the
// rt_tables files below root ("/" on a live system). A name that is a
// number is that number.
func LookupTable(root, name string) (uint64, bool, error) {
	if n, err := parseTableNumber(name); err == nil {
		return n, true, nil
	}
	for _, pattern := range tableFiles {
		files, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return 0, false, err
		}
		for _, f := range files {
			n, ok, err := lookupIn(f, name)
			if err != nil || ok {
				return n, ok, err
			}
		}
	}
	return 0, false, nil
}

// lookupIn reads one rt_tables file: "NUMBER NAME" lines, # comments.
func lookupIn(file, name string) (uint64, bool, error) {
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line, _, _ := strings.Cut(s.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[1] != name {
			continue
		}
		n, err := parseTableNumber(fields[0])
		if err != nil {
			return 0, false, fmt.Errorf("%s: table %q: %w", file, name, err)
		}
		return n, true, nil
	}
	return 0, false, s.Err()
}

// parseTableNumber reads a table number as iproute2 does: decimal or 0x hex.
func parseTableNumber(s string) (uint64, error) {
	return strconv.ParseUint(s, 0, 64)
}
