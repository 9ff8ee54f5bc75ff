package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ifisp/ifisp/pkg/ifcheck"
)

// root holds the rt_tables of the tests: ispa is 100, ispb 101.
const root = "../../testdata/rt"

func ifisp(args ...string) (code int, stdout, stderr string) {
	var out, errs bytes.Buffer
	code = run(args, &out, &errs)
	return code, out.String(), errs.String()
}

// TestCheckExamples: `ifisp check` passes the shipped examples with one
// line on stdout, and -q silences it.
func TestCheckExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.interfaces")
	if len(files) == 0 {
		t.Fatal("no examples")
	}
	for _, f := range files {
		code, out, errs := ifisp("check", "--root", root, f)
		if code != 0 || errs != "" || !strings.HasPrefix(out, f+": ok (") {
			t.Errorf("ifisp check %s: exit %d\n%s%s", f, code, out, errs)
		}
		if code, out, _ := ifisp("check", "-q", "--root", root, f); code != 0 || out != "" {
			t.Errorf("ifisp check -q %s: exit %d, %q", f, code, out)
		}
	}
}

// TestCheckBroken: for each broken file, `ifisp check` prints the
// report's lines (which ifcheck's tests pin) on stderr, nothing on stdout,
// and exits 1.
func TestCheckBroken(t *testing.T) {
	files, _ := filepath.Glob("../../pkg/ifcheck/testdata/broken/*.interfaces")
	if len(files) == 0 {
		t.Fatal("no broken files")
	}
	for _, f := range files {
		r, err := ifcheck.Check(f, ifcheck.Options{Root: root})
		if err != nil {
			t.Fatal(err)
		}
		code, out, errs := ifisp("check", "--root", root, f)
		if code != 1 || out != "" || errs != r.String() || len(r.Problems) == 0 {
			t.Errorf("ifisp check %s: exit %d, stdout %q, stderr\n%swant exit 1 and\n%s", f, code, out, errs, r)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string // in stdout or stderr
	}{
		{nil, 2, "usage: ifisp COMMAND"},
		{[]string{"--help"}, 0, "explain IFACE [FILE]"},
		{[]string{"frobnicate"}, 2, `ifisp: unknown command "frobnicate"`},
		{[]string{"check", "--bogus"}, 2, "ifisp check: unknown flag: --bogus (see ifisp check --help)"},
		{[]string{"check", "a", "b"}, 2, `ifisp check: unexpected argument "b"`},
		{[]string{"check", "--help"}, 0, "usage: ifisp check [OPTIONS] [FILE]"},
		{[]string{"check", "testdata/nosuch"}, 1, "ifisp check: stat testdata/nosuch: no such file or directory"},
		{[]string{"explain"}, 2, "ifisp explain: too few arguments"},
		{[]string{"status", "extra"}, 2, `ifisp status: unexpected argument "extra"`},
	} {
		code, out, errs := ifisp(tc.args...)
		if code != tc.code || !strings.Contains(out+errs, tc.want) {
			t.Errorf("ifisp %q: exit %d\n%s%s\nwant exit %d and %q", tc.args, code, out, errs, tc.code, tc.want)
		}
	}
}
