package ifcheck

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-cmp/cmp"
)

// root holds the rt_tables of the tests: ispa is 100, ispb 101.
const root = "../../testdata/rt"

// TestExamples: the shipped examples are clean.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.interfaces")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		r, err := Check(f, Options{Root: root})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Problems) > 0 || len(r.Links) == 0 {
			t.Errorf("%s: %d ifisp stanzas, problems:\n%s", f, len(r.Links), r)
		}
	}
}

// TestBroken checks each file of testdata/broken, whose "# want:" lines
// are the lines it must give, in order: "# want: LINE: TEXT" for a line
// of the file itself, "# want: PATH:LINE: TEXT" for one of a file it
// sources (PATH relative to its folder). FILE in TEXT stands for the
// file's own path.
func TestBroken(t *testing.T) {
	files, err := filepath.Glob("testdata/broken/*.interfaces")
	if err != nil || len(files) == 0 {
		t.Fatalf("no broken files: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			want := wantLines(t, path)
			if len(want) == 0 {
				t.Fatal("no # want: lines")
			}
			r, err := Check(path, Options{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range r.Problems {
				got = append(got, p.String())
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("problems (-want +got):\n%s", d)
			}
		})
	}
}

func wantLines(t *testing.T, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		w, ok := strings.CutPrefix(s.Text(), "# want: ")
		if !ok {
			continue
		}
		w = strings.ReplaceAll(w, "FILE", path)
		if w != "" && unicode.IsDigit(rune(w[0])) {
			w = path + ":" + w
		} else {
			w = filepath.Join(filepath.Dir(path), w)
		}
		want = append(want, w)
	}
	return want
}

// TestHints: advice is given apart from the problems.
func TestHints(t *testing.T) {
	r, err := Check("testdata/broken/metric-gateway.interfaces", Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Hints) != 1 || !strings.Contains(r.Hints[0].String(), `metric-gateway.interfaces:11: wanb: gateway "203.0.113.1": ifisp withdraws this default before ifupdown does`) {
		t.Errorf("hints: %v", r.Hints)
	}
}

// TestMissingFile: a file that cannot be read is an error, not a report.
func TestMissingFile(t *testing.T) {
	if _, err := Check("testdata/nosuch", Options{Root: root}); err == nil {
		t.Error("no error")
	}
}
