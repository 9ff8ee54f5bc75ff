// Package man holds the scdoc sources of ifisp's man pages (`make man`
// turns them into roff). Its tests keep the pages in step with the code:
// the options of ifisp-interfaces(5) with stanza.Options() (their defaults
// are written by internal/optdoc), the hook names of ifisp-hooks(8) with
// hooks/layout, its examples with examples/.
package man

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ifisp/ifisp/pkg/stanza"
)

// page is one scdoc source, split into its sections.
type page struct {
	path     string
	name     string              // from the preamble, e.g. "ifisp-watch(8)"
	sections map[string][]string // "# NAME" -> its lines
}

func readPage(t *testing.T, file string) *page {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := &page{path: file, sections: map[string][]string{}}
	lines := strings.Split(string(b), "\n")
	p.name, _, _ = strings.Cut(lines[0], " ")
	section := ""
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "# ") {
			section = strings.TrimPrefix(l, "# ")
			continue
		}
		if section != "" && !strings.HasPrefix(l, "; ") {
			p.sections[section] = append(p.sections[section], l)
		}
	}
	return p
}

// entry is one term of a definition list: a line at column 0 followed by
// its tab-indented body.
type entry struct {
	term string
	body string // the body's lines joined, whitespace collapsed
}

// entries lists the definition list entries of a section whose term
// matches re (its first group is the entry's term).
func entries(lines []string, re *regexp.Regexp) []entry {
	var list []entry
	for i := 0; i < len(lines); i++ {
		m := re.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		e := entry{term: m[1]}
		var body []string
		for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
			i++
			body = append(body, lines[i])
		}
		e.body = strings.Join(strings.Fields(strings.Join(body, " ")), " ")
		list = append(list, e)
	}
	return list
}

// TestInterfacesOptions checks that ifisp-interfaces(5) documents exactly
// the options of stanza.Options(), in its order. Each entry's default is
// written from the options table by internal/optdoc, whose test checks it.
func TestInterfacesOptions(t *testing.T) {
	p := readPage(t, "ifisp-interfaces.5.scd")
	documented := entries(p.sections["OPTIONS"], regexp.MustCompile(`^\*([a-z0-9-]+)\*( |$)`))
	var names, want []string
	for _, e := range documented {
		names = append(names, e.term)
	}
	for _, o := range stanza.Options() {
		want = append(want, o.Name)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("%s: OPTIONS lists\n\t%s\nbut stanza.Options() has\n\t%s", p.path, strings.Join(names, " "), strings.Join(want, " "))
	}
}

// TestInterfacesExamples checks that the examples of ifisp-interfaces(5)
// are cut from examples/*.interfaces, which the lab tests run: every line
// of its literal blocks is a line (or a commented line) of one of them.
func TestInterfacesExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/*.interfaces")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	known := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			known[strings.TrimSpace(l)] = true
			known[strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))] = true
		}
	}
	p := readPage(t, "ifisp-interfaces.5.scd")
	literal, blocks := false, 0
	for _, l := range p.sections["EXAMPLES"] {
		if strings.TrimSpace(l) == "```" {
			literal = !literal
			blocks++
			continue
		}
		if l = strings.TrimSpace(l); literal && l != "" && !known[l] {
			t.Errorf("%s: example line %q is in no examples/*.interfaces", p.path, l)
		}
	}
	if blocks < 2 {
		t.Errorf("%s: no examples", p.path)
	}
}

// hook is one line of hooks/layout.
type hook struct{ folder, name, binary string }

func layout(t *testing.T) []hook {
	t.Helper()
	f, err := os.Open("../hooks/layout")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hooks []hook
	s := bufio.NewScanner(f)
	for s.Scan() {
		if l := strings.Fields(s.Text()); len(l) == 3 && !strings.HasPrefix(l[0], "#") {
			hooks = append(hooks, hook{l[0], l[1], l[2]})
		}
	}
	if err := s.Err(); err != nil || len(hooks) == 0 {
		t.Fatalf("hooks/layout: %d hooks, %v", len(hooks), err)
	}
	return hooks
}

// TestHooksPage checks ifisp-hooks(8) against hooks/layout: its NAME
// names every hook binary (`make install` links a page of each name to
// it, so `man ifisp-route` finds it), and its Order lists each folder's
// run-parts names in the order run-parts runs them.
func TestHooksPage(t *testing.T) {
	p := readPage(t, "ifisp-hooks.8.scd")
	hooks := layout(t)
	var binaries []string
	folders := map[string][]string{}
	for _, h := range hooks {
		if !slices.Contains(binaries, h.binary) {
			binaries = append(binaries, h.binary)
		}
		folders[h.folder] = append(folders[h.folder], h.name)
	}
	sort.Strings(binaries)
	nameLine := strings.TrimSpace(strings.Join(p.sections["NAME"], " "))
	names, _, _ := strings.Cut(nameLine, " - ")
	got := strings.Split(names, ", ")
	sort.Strings(got)
	if !slices.Equal(got, binaries) {
		t.Errorf("%s: NAME names %v, hooks/layout has the binaries %v", p.path, got, binaries)
	}

	order := entries(p.sections["DESCRIPTION"], regexp.MustCompile(`^_(if-[a-z-]+\.d)_$`))
	if len(order) != len(folders) {
		t.Errorf("%s: Order lists %d folders, hooks/layout has %d", p.path, len(order), len(folders))
	}
	for _, e := range order {
		want := folders[e.term]
		sort.Strings(want) // run-parts: the C locale's order
		if got := strings.Split(e.body, ", "); !slices.Equal(got, want) {
			t.Errorf("%s: Order: %s runs %v, hooks/layout says %v", p.path, e.term, got, want)
		}
	}
}

// TestFlagsDocumented checks that the OPTIONS of ifisp-watch(8) and
// ifisp-hooks(8) are the flags their code defines (read from the source:
// pflag calls with a literal name), besides --help.
func TestFlagsDocumented(t *testing.T) {
	flag := regexp.MustCompile(`\b(?:pflag|fs)\.[A-Z][A-Za-z0-9]*\("([a-z0-9-]+)"`)
	for page, source := range map[string]string{
		"ifisp-watch.8.scd": "../cmd/ifisp-watch/main.go",
		"ifisp-hooks.8.scd": "../pkg/hook/hook.go",
	} {
		b, err := os.ReadFile(source)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, m := range flag.FindAllStringSubmatch(string(b), -1) {
			want = append(want, "--"+m[1])
		}
		p := readPage(t, page)
		var got []string
		for _, e := range entries(p.sections["OPTIONS"], regexp.MustCompile(`^\*(-[a-z-]+)\*`)) {
			if e.term != "-h" {
				got = append(got, e.term)
			}
		}
		sort.Strings(want)
		sort.Strings(got)
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("%s: OPTIONS documents %v, %s defines %v", page, got, source, want)
		}
	}
}

// TestEveryBinaryHasAPage checks that each binary under cmd/ has a man
// page of its own name or is named by ifisp-hooks(8), and that each page's
// preamble names the page its file is.
func TestEveryBinaryHasAPage(t *testing.T) {
	sources, err := filepath.Glob("*.scd")
	if err != nil {
		t.Fatal(err)
	}
	pages := map[string]bool{}
	for _, s := range sources {
		p := readPage(t, s)
		base := strings.TrimSuffix(s, ".scd") // NAME.SECTION
		dot := strings.LastIndex(base, ".")
		if want := base[:dot] + "(" + base[dot+1:] + ")"; p.name != want {
			t.Errorf("%s: preamble %q, want %q", s, p.name, want)
		}
		pages[base[:dot]] = true
	}
	for _, h := range layout(t) {
		pages[h.binary] = true // a link to ifisp-hooks(8)
	}
	cmds, err := os.ReadDir("../cmd")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if c.IsDir() && !pages[c.Name()] {
			t.Errorf("cmd/%s has no man page: add man/%s.8.scd (scdoc, see scdoc(5))", c.Name(), c.Name())
		}
	}
}
