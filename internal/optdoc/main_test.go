package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestGenerated regenerates each file from the options table and fails
// when the committed one differs: a default (or doc) changed in
// pkg/stanza/options.go without `go generate ./pkg/stanza`, or a copy
// edited by hand.
func TestGenerated(t *testing.T) {
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join("../..", f.path))
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.gen(string(b))
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		if d := cmp.Diff(got, string(b)); d != "" {
			t.Errorf("%s differs from the options table in pkg/stanza/options.go (-generated +%s); go generate ./pkg/stanza (or make docs) rewrites it:\n%s", f.path, f.path, d)
		}
		if again, _ := f.gen(got); again != got {
			t.Errorf("%s: generating twice changes it again", f.path)
		}
	}
}

const page = `x(5)

# OPTIONS

*isp-table* _TABLE_
	The table.

`

// TestManPageRefusals: the generator refuses a page whose entries are not
// the table's, and one that states a default by hand.
func TestManPageRefusals(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"no section", "x(5)\n", `no "# OPTIONS" section`},
		{"entries not the table's", page, "OPTIONS has the entries\n\tisp-table\nbut the options table has"},
		{"a default by hand", strings.Replace(full(t), "\tThe probe period", "\tDefault: 1s. The probe period", 1), "isp-check-interval: line "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manPage(tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("manPage: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func full(t *testing.T) string {
	b, err := os.ReadFile("../../man/ifisp-interfaces.5.scd")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
