package stanza

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxUint32 is the highest routing table number and route metric: the
// kernel's limit (a uint32), or the highest an int holds where that is
// less, since netlink takes both as an int.
const maxUint32 = min(math.MaxUint32, math.MaxInt)

// ErrNoTable is returned by LookupTable for a name that no rt_tables file
// defines.
var ErrNoTable = errors.New("no such table")

// errTableRange is returned by LookupTable for a number no table can have.
var errTableRange = fmt.Errorf("table number out of range (1 to %d)", maxUint32)

// tableFiles are the files iproute2 reads table names from, below the
// filesystem root, in the order they are searched; the first name found
// wins.
var tableFiles = []string{
	"etc/iproute2/rt_tables",
	"etc/iproute2/rt_tables.d/*.conf",
	"usr/share/iproute2/rt_tables",
}

// protoFiles are the files iproute2 reads route protocol names from.
var protoFiles = []string{
	"etc/iproute2/rt_protos",
	"etc/iproute2/rt_protos.d/*.conf",
	"usr/share/iproute2/rt_protos",
	"usr/share/iproute2/rt_protos.d/*.conf",
}

// TableName returns the name the rt_tables files below root give table n
// (one that LookupTable resolves back to n), or "" when none does.
func TableName(root string, n int) string {
	for _, name := range namesOf(root, tableFiles, n) {
		if m, err := LookupTable(root, name); err == nil && m == n {
			return name
		}
	}
	return ""
}

// ProtoName returns the name the rt_protos files below root give route
// protocol n, or "" when they give none.
func ProtoName(root string, n int) string {
	if names := namesOf(root, protoFiles, n); len(names) > 0 {
		return names[0]
	}
	return ""
}

// namesOf lists, in search order, the names "NUMBER NAME" lines of the
// files below root give number n.
func namesOf(root string, patterns []string, n int) []string {
	var names []string
	for _, pattern := range patterns {
		files, _ := filepath.Glob(filepath.Join(root, pattern))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				line, _, _ = strings.Cut(line, "#")
				fields := strings.Fields(line)
				if len(fields) < 2 || !isTableNumber(fields[0]) {
					continue
				}
				if m, err := parseTableNumber(fields[0]); err == nil && m == n {
					names = append(names, fields[1])
				}
			}
		}
	}
	return names
}

// isTableNumber reports whether s is meant as a table number rather than a
// name, in range or not: decimal (possibly negative) or 0x hex.
func isTableNumber(s string) bool {
	if hex, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		return madeOf(hex, "0123456789abcdef")
	}
	return madeOf(strings.TrimPrefix(s, "-"), "0123456789")
}

// LookupTable resolves name to a routing table number. A number (decimal,
// or hex with 0x) is itself; any other name is looked up in
// /etc/iproute2/rt_tables, /etc/iproute2/rt_tables.d/*.conf and
// /usr/share/iproute2/rt_tables below root ("/" on a live system). It
// returns ErrNoTable for a name none of them defines, and an error for a
// negative number or one above 4294967295 (2147483647 where an int has 32
// bits). Reserved numbers (0, 253, 254, 255) are returned like any other:
// whether they may be used is the caller's call.
func LookupTable(root, name string) (int, error) {
	if isTableNumber(name) {
		return parseTableNumber(name)
	}
	for _, pattern := range tableFiles {
		files, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return 0, err
		}
		for _, f := range files {
			n, ok, err := lookupIn(f, name)
			if err != nil || ok {
				return n, err
			}
		}
	}
	return 0, ErrNoTable
}

// lookupIn looks name up in one rt_tables file: "NUMBER NAME" lines,
// separated by whitespace, with # comments.
func lookupIn(file, name string) (int, bool, error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) { // a dangling symlink
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
		if !isTableNumber(fields[0]) {
			return 0, false, fmt.Errorf("%s: table %s: %q is not a number", file, name, fields[0])
		}
		n, err := parseTableNumber(fields[0])
		if err != nil {
			return 0, false, fmt.Errorf("%s: table %s: %v", file, name, err)
		}
		return n, true, nil
	}
	return 0, false, s.Err()
}

// parseTableNumber reads a string isTableNumber accepts: decimal, or hex
// with 0x, as in the rt_tables files (a leading 0 does not make it octal).
func parseTableNumber(s string) (int, error) {
	base := 10
	if hex, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		s, base = hex, 16
	}
	n, err := strconv.ParseUint(s, base, 64)
	if err != nil || n > maxUint32 {
		return 0, errTableRange
	}
	return int(n), nil
}
