// Package interfaces reads /etc/network/interfaces as ifupdown 0.8 reads it
// (config.c of Debian's ifupdown, interfaces(5)), keeping the file and line
// of every stanza and option, and gives each `iface` stanza the environment
// ifupdown hands its hooks (Env), so that what ifisp's hooks will be told
// can be checked before ifup runs.
//
// What it follows, as ifupdown does:
//
//   - A line whose first non-blank character is '#' is a comment; there are
//     no end-of-line comments. A line ending in a backslash continues on the
//     next one, which is appended as it is (its leading blanks included).
//   - `iface NAME FAMILY METHOD [inherits OTHER]`, followed by option lines
//     "NAME VALUE". An option given twice has its values joined by a
//     newline, as ifupdown does; post-up is up, pre-down is down.
//   - `auto`, `allow-CLASS`, `no-auto-down`, `no-scripts`, `rename` and
//     `mapping` (with its `script` and `map` lines).
//   - `source PATTERN...` and `source-directory PATTERN...`: a relative
//     pattern is relative to the folder of the file it is written in;
//     patterns are shell globs; a file that does not exist is skipped
//     silently; source-directory reads the files of each folder whose names
//     match ^[a-zA-Z0-9_-]+$, in byte order. A file read once is not read
//     again.
//
// Where ifupdown reports the last physical line of a continued line, this
// package reports the first: the one with the option's name.
package interfaces

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Pos is where something was written: file and line (from 1).
type Pos struct {
	File string
	Line int
}

// String is "FILE:LINE", as compilers and `nginx -t` write it.
func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Option is one option line of a stanza.
type Option struct {
	Name  string // as written, except post-up and pre-down (up, down)
	Value string // the rest of the line, continuation lines joined
	Pos   Pos    // its line (for an inherited option, the parent's)
}

// Stanza is one `iface` stanza.
type Stanza struct {
	Name   string // the logical interface name
	Family string // inet, inet6, ipx, can, meta
	Method string // static, dhcp, v4tunnel, ...
	Pos    Pos    // the iface line
	// Options are the stanza's option lines in order, the inherited ones
	// first. A name may appear more than once.
	Options []Option
}

// Mapping is one `mapping` stanza. ifisp never runs its script: a stanza is
// checked under its own logical name.
type Mapping struct {
	Patterns []string
	Script   string
	Maps     []string
	Pos      Pos
}

// File is an interfaces file with everything it sources.
type File struct {
	// Files lists every file read, in the order they were read.
	Files    []string
	Stanzas  []*Stanza
	Mappings []*Mapping
	// Allow maps each class ("auto", "hotplug", ...) to its interfaces,
	// in order; allow-auto is auto.
	Allow map[string][]string
}

// Find returns the stanzas of logical interface name, in file order:
// those `ifup NAME` configures, one after the other.
func (f *File) Find(name string) []*Stanza {
	var list []*Stanza
	for _, s := range f.Stanzas {
		if s.Name == name {
			list = append(list, s)
		}
	}
	return list
}

// SyntaxError is a line ifupdown refuses: it then reads no interfaces file
// at all, and ifup configures nothing.
type SyntaxError struct {
	Pos Pos
	Msg string
}

func (e *SyntaxError) Error() string { return e.Pos.String() + ": " + e.Msg }

// Errors is every SyntaxError of a file, and what could not be read.
type Errors []error

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, err := range e {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

// Families maps each address family ifupdown 0.8 knows on Linux to its
// methods.
var Families = map[string][]string{
	"inet":  {"loopback", "static", "manual", "dhcp", "bootp", "tunnel", "ppp", "wvdial", "ipv4ll"},
	"inet6": {"auto", "loopback", "static", "manual", "dhcp", "v4tunnel", "6to4"},
	"ipx":   {"static", "dynamic"},
	"can":   {"static"},
	"meta":  {"none"},
}

// Read reads the interfaces file at path and every file it sources. The
// File holds whatever could be read; the error, an Errors, lists every line
// ifupdown would refuse and every file that could not be read. A missing
// top-level file is an error (ifupdown only warns, and has no interfaces).
func Read(path string) (*File, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	r := &reader{f: &File{Allow: map[string][]string{}}, seen: map[string]bool{}}
	r.read(path)
	if len(r.errs) > 0 {
		return r.f, r.errs
	}
	return r.f, nil
}

type reader struct {
	f    *File
	seen map[string]bool
	errs Errors
}

// state is what the option lines that follow belong to.
type state int

const (
	none    state = iota
	iface         // options go to the last stanza
	mapping       // script and map lines go to the last mapping
	broken        // a refused iface line: its options are not reported again
)

func (r *reader) bad(pos Pos, format string, args ...any) {
	r.errs = append(r.errs, &SyntaxError{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

func (r *reader) read(path string) {
	path = filepath.Clean(path)
	if r.seen[path] {
		return
	}
	r.seen[path] = true
	lines, err := logicalLines(path)
	if err != nil {
		r.errs = append(r.errs, err)
		return
	}
	r.f.Files = append(r.f.Files, path)
	st := none
	var cur *Stanza
	var curMap *Mapping
	for _, l := range lines {
		pos := Pos{path, l.n}
		word, rest := cutWord(l.text)
		switch {
		case word == "":
			continue
		case word == "mapping":
			curMap = &Mapping{Patterns: strings.Fields(rest), Pos: pos}
			r.f.Mappings = append(r.f.Mappings, curMap)
			st = mapping
		case word == "source":
			r.source(path, rest, false)
			st = none
		case isSourceDirectory(word):
			r.source(path, rest, true)
			st = none
		case word == "iface":
			cur = r.iface(pos, rest)
			st = iface
			if cur == nil {
				st = broken
			}
		case word == "auto" || strings.HasPrefix(word, "allow-") && len(word) > len("allow-"):
			class := strings.TrimPrefix(word, "allow-")
			for _, name := range strings.Fields(rest) {
				if !slices.Contains(r.f.Allow[class], name) {
					r.f.Allow[class] = append(r.f.Allow[class], name)
				}
			}
			st = none
		case word == "no-auto-down" || word == "no-scripts" || word == "rename":
			st = none
		default:
			switch st {
			case iface:
				r.option(cur, pos, word, rest)
			case mapping:
				switch word {
				case "script":
					if curMap.Script != "" {
						r.bad(pos, "duplicate script in mapping")
					}
					curMap.Script = rest
				case "map":
					curMap.Maps = append(curMap.Maps, rest)
				default:
					r.bad(pos, "misplaced option %q (a mapping stanza takes script and map lines only)", word)
				}
			case broken:
			default:
				r.bad(pos, "misplaced option %q (an option line belongs under an iface line)", word)
			}
		}
	}
}

// option adds one option line to s.
func (r *reader) option(s *Stanza, pos Pos, name, value string) {
	switch name {
	case "post-up":
		name = "up"
	case "pre-down":
		name = "down"
	}
	if value == "" {
		r.bad(pos, "%s: option with empty value (give it a value, or remove the line)", name)
		return
	}
	s.Options = append(s.Options, Option{Name: name, Value: value, Pos: pos})
}

// iface reads an iface line's words (after "iface") and returns the new
// stanza, or nil when ifupdown would refuse the line.
func (r *reader) iface(pos Pos, rest string) *Stanza {
	words := strings.Fields(rest)
	if len(words) < 2 {
		r.bad(pos, "too few parameters for iface line (iface NAME FAMILY METHOD)")
		return nil
	}
	s := &Stanza{Name: words[0], Pos: pos}
	words = words[1:]
	var parent string
	// iface NAME inherits OTHER, iface NAME FAMILY inherits OTHER and
	// iface NAME FAMILY METHOD [inherits OTHER].
	methods, known := Families[words[0]]
	switch {
	case known:
		s.Family = words[0]
		words = words[1:]
		if len(words) > 0 && slices.Contains(methods, words[0]) {
			s.Method = words[0]
			words = words[1:]
		} else if len(words) == 0 || words[0] != "inherits" {
			got := "none"
			if len(words) > 0 {
				got = words[0]
			}
			r.bad(pos, "unknown or no method and no inherits keyword specified (got %s; %s takes %s)", got, s.Family, strings.Join(methods, ", "))
			return nil
		}
	case words[0] != "inherits":
		r.bad(pos, "unknown or no address type and no inherits keyword specified (got %s; ifupdown knows %s)", words[0], strings.Join(familyNames(), ", "))
		return nil
	}
	if len(words) > 0 {
		if words[0] != "inherits" {
			r.bad(pos, "extra parameter for the iface line not understood and ignored: %s (options go on lines of their own)", words[0])
		} else if len(words) < 2 {
			r.bad(pos, "'inherits' keyword is missing a parameter")
			return nil
		} else {
			parent = words[1]
		}
	}
	if parent != "" {
		var from *Stanza
		for _, o := range r.f.Stanzas {
			if o.Name == parent && (s.Family == "" || o.Family == s.Family) {
				from = o
				break
			}
		}
		if from == nil {
			fam := s.Family
			if fam == "" {
				fam = "*"
			}
			r.bad(pos, "unknown iface to inherit from: %s (%s) (it must be defined earlier)", parent, fam)
			return nil
		}
		s.Options = slices.Clone(from.Options)
		if s.Family == "" {
			s.Family = from.Family
		}
		if s.Method == "" {
			s.Method = from.Method
		}
	}
	r.f.Stanzas = append(r.f.Stanzas, s)
	return s
}

func familyNames() []string {
	var names []string
	for f := range Families {
		names = append(names, f)
	}
	sort.Strings(names)
	return names
}

// isSourceDirectory reports whether word is the source-directory keyword:
// ifupdown accepts any abbreviation down to "source-dir".
func isSourceDirectory(word string) bool {
	return len(word) >= len("source-dir") && strings.HasPrefix("source-directory", word)
}

// sourceName is what source-directory reads of a folder.
var sourceName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// source reads the files that a source or source-directory line names,
// relative to the folder of from.
func (r *reader) source(from, patterns string, dirs bool) {
	for _, pattern := range strings.Fields(patterns) {
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(filepath.Dir(from), pattern)
		}
		matches, err := filepath.Glob(pattern)
		if err != nil || len(matches) == 0 {
			matches = []string{pattern} // as wordexp leaves a pattern without a match
		}
		for _, m := range matches {
			if !dirs {
				if _, err := os.Stat(m); errors.Is(err, fs.ErrNotExist) {
					continue
				}
				r.read(m)
				continue
			}
			entries, err := os.ReadDir(m)
			if err != nil {
				continue // ifupdown skips a folder it cannot scan
			}
			for _, e := range entries { // sorted by name
				if sourceName.MatchString(e.Name()) {
					r.read(filepath.Join(m, e.Name()))
				}
			}
		}
	}
}

// line is one logical line: its first physical line's number and its text,
// without leading and trailing blanks.
type line struct {
	n    int
	text string
}

// logicalLines reads path as ifupdown's get_line does: comment lines
// dropped, continued lines joined.
func logicalLines(path string) ([]line, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var lines []line
	s := bufio.NewScanner(strings.NewReader(string(b)))
	s.Buffer(nil, len(b)+1)
	n := 0
	next := func() (string, bool) {
		if !s.Scan() {
			return "", false
		}
		n++
		return s.Text(), true
	}
	for {
		text, ok := next()
		if !ok {
			break
		}
		first := n
		text = strings.TrimLeft(text, " \t\r\v\f")
		if strings.HasPrefix(text, "#") {
			continue
		}
		for strings.HasSuffix(text, `\`) {
			more, ok := next()
			text = strings.TrimSuffix(text, `\`) + more
			if !ok {
				break
			}
		}
		lines = append(lines, line{first, strings.TrimRight(text, " \t\r\v\f")})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return lines, nil
}

// cutWord splits off the first word of a line and the rest without its
// leading blanks.
func cutWord(s string) (string, string) {
	i := strings.IndexAny(s, " \t\r\v\f")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t\r\v\f")
}
