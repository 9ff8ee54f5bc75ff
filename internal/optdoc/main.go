// Command optdoc writes the documentation of the stanza options that is
// made from the options table in pkg/stanza, so that each option's default
// (and its one-line doc) is written once, there: the option table of
// README.md and docs/design.md, and the line that ends each entry of
// OPTIONS in ifisp-interfaces(5), "Default: ..." or "No default.".
//
// Run it as `go generate ./pkg/stanza` or `make docs`. Its test regenerates
// each file and fails when the committed one differs, so CI catches a
// table changed without its copies.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/ifisp/ifisp/pkg/stanza"
)

// file is one generated-into file, relative to the repository's top, and
// how its generated part is made from its text.
type file struct {
	path string
	gen  func(text string) (string, error)
}

var files = []file{
	{"README.md", markdown},
	{"docs/design.md", markdown},
	{"man/ifisp-interfaces.5.scd", manPage},
}

func main() {
	root := flag.String("root", "", "the repository's top `folder` (default: the one with go.mod at or above the working directory)")
	flag.Parse()
	if err := run(*root); err != nil {
		fmt.Fprintf(os.Stderr, "optdoc: %v\n", err)
		os.Exit(1)
	}
}

func run(root string) error {
	if root == "" {
		var err error
		if root, err = moduleRoot(); err != nil {
			return err
		}
	}
	for _, f := range files {
		path := filepath.Join(root, f.path)
		old, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		text, err := f.gen(string(old))
		if err != nil {
			return fmt.Errorf("%s: %w", f.path, err)
		}
		if text == string(old) {
			continue
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return err
		}
		fmt.Printf("optdoc: wrote %s\n", f.path)
	}
	return nil
}

// moduleRoot is the folder holding go.mod, at or above the working
// directory (go generate runs in the package's folder).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory (give -root)")
		}
		dir = parent
	}
}

// The lines between which a Markdown file holds the generated table.
const (
	beginTable = "<!-- The option table is generated from pkg/stanza/options.go: edit it there, then go generate ./pkg/stanza. -->"
	endTable   = "<!-- End of the generated option table. -->"
)

// markdown replaces the option table between beginTable and endTable.
func markdown(text string) (string, error) {
	start := strings.Index(text, beginTable+"\n")
	end := strings.Index(text, "\n"+endTable+"\n")
	if start < 0 || end < start {
		return "", fmt.Errorf("no option table: a line %q, then the table, then a line %q", beginTable, endTable)
	}
	start += len(beginTable) + 1
	return text[:start] + "\n" + stanza.MarkdownTable() + text[end:], nil
}

var (
	// term is the first line of an OPTIONS entry: "*isp-table* _TABLE_".
	term = regexp.MustCompile(`^\*([a-z0-9-]+)\*( |$)`)
	// defaultLine is the line manPage writes at the end of each entry.
	defaultLine = regexp.MustCompile(`^\t(Default: .*|No default\.)$`)
)

// manPage rewrites the last line of each entry of ifisp-interfaces(5)'s
// OPTIONS with the option's default. The entries must be the options
// table's, in its order; their hand-written text must not state a default
// itself.
func manPage(text string) (string, error) {
	lines := strings.Split(text, "\n")
	start := -1
	for i, l := range lines {
		if l == "# OPTIONS" {
			start = i + 1
			break
		}
	}
	if start < 0 {
		return "", errors.New(`no "# OPTIONS" section`)
	}
	end := len(lines)
	for i := start; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "# ") {
			end = i
			break
		}
	}
	var entries []int // the term lines
	for i := start; i < end; i++ {
		if term.MatchString(lines[i]) {
			entries = append(entries, i)
		}
	}
	options := stanza.Options()
	var names, want []string
	for _, i := range entries {
		names = append(names, term.FindStringSubmatch(lines[i])[1])
	}
	for _, o := range options {
		want = append(want, o.Name)
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		return "", fmt.Errorf("OPTIONS has the entries\n\t%s\nbut the options table has\n\t%s", strings.Join(names, " "), strings.Join(want, " "))
	}
	var out []string
	out = append(out, lines[:start]...)
	for k, i := range entries {
		next := end
		if k+1 < len(entries) {
			next = entries[k+1]
		}
		if k == 0 {
			out = append(out, lines[start:i]...)
		}
		last := next - 1 // the entry's last line of text
		for last > i && strings.TrimSpace(lines[last]) == "" {
			last--
		}
		body := lines[i : last+1]
		if defaultLine.MatchString(lines[last]) {
			body = lines[i:last]
		}
		for n, l := range body[1:] {
			if strings.Contains(l, "Default:") || strings.Contains(l, "No default") {
				return "", fmt.Errorf("%s: line %d states a default (%q): the line optdoc writes at the end of the entry says it", options[k].Name, i+n+2, strings.TrimSpace(l))
			}
		}
		out = append(out, body...)
		out = append(out, "\t"+manDefault(&options[k]))
		out = append(out, lines[last+1:next]...)
	}
	out = append(out, lines[end:]...)
	return strings.Join(out, "\n"), nil
}

// manDefault is the sentence of ifisp-interfaces(5) that gives o's
// default, its text escaped for scdoc.
func manDefault(o *stanza.Option) string {
	d := o.DefaultDoc(func(v string) string { return v })
	if d == "" {
		return "No default."
	}
	var b bytes.Buffer
	for _, r := range d {
		if r == '*' || r == '_' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return "Default: " + b.String() + "."
}
