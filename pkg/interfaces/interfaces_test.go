package interfaces

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const site = "testdata/site/interfaces"

// TestRead follows source-directory and a relative source glob, drops
// comments, joins continued lines and numbers every line.
func TestRead(t *testing.T) {
	f, err := Read(site)
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{site, "testdata/site/interfaces.d/Alpha_1-x", "testdata/site/interfaces.d/wanb", "testdata/site/more/sixrd.conf"}
	if d := cmp.Diff(wantFiles, f.Files); d != "" {
		t.Errorf("files read (-want +got):\n%s", d)
	}
	type opt struct {
		Name, Value string
		Line        int
	}
	type stanza struct {
		Name, Family, Method, File string
		Line                       int
		Options                    []opt
	}
	var got []stanza
	for _, s := range f.Stanzas {
		st := stanza{s.Name, s.Family, s.Method, filepath.Base(s.Pos.File), s.Pos.Line, nil}
		for _, o := range s.Options {
			st.Options = append(st.Options, opt{o.Name, o.Value, o.Pos.Line})
		}
		got = append(got, st)
	}
	want := []stanza{
		{"alpha", "inet6", "v4tunnel", "Alpha_1-x", 1, []opt{{"endpoint", "any", 2}, {"local", "203.0.113.2", 3}, {"6rd-prefix", "2001:db8:6000::/40", 4}}},
		{"wanb", "inet", "static", "wanb", 1, []opt{{"address", "203.0.113.2", 2}, {"netmask", "255.255.255.0", 3}, {"broadcast", "-", 4},
			{"gateway", "203.0.113.1", 5}, {"isp-table", "ispb", 6}}},
		{"sixto4:1", "inet6", "6to4", "sixrd.conf", 2, []opt{{"local", "192.0.2.1", 3}}},
		{"lo", "inet", "loopback", "interfaces", 7, nil},
		{"wana", "inet", "static", "interfaces", 10, []opt{{"address", "198.51.100.2/24", 11}, {"isp-table", "ispa", 12},
			{"isp-source", "198.51.100.64/28 \t  198.51.100.80/28", 13}, {"isp-source", "192.0.2.0/29", 15},
			{"up", "echo up", 16}, {"down", "echo down", 17}, {"isp-gateway", "198.51.100.1", 19}}},
		{"wana", "inet6", "static", "interfaces", 21, []opt{{"address", "2001:db8:a::2/64", 22}, {"gateway", "2001:db8:a::1", 23}, {"isp-table", "ispa", 24}}},
		{"base", "inet", "static", "interfaces", 26, []opt{{"mtu", "1400", 27}, {"isp-check-interval", "1s", 28}}},
		// Inherited options first, with the parent's lines.
		{"wanc", "inet", "static", "interfaces", 30, []opt{{"mtu", "1400", 27}, {"isp-check-interval", "1s", 28}, {"address", "10.0.0.2", 31}, {"mtu", "1500", 32}}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("stanzas (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string][]string{"auto": {"lo", "wana"}, "hotplug": {"wanb"}}, f.Allow); d != "" {
		t.Errorf("auto and allow- (-want +got):\n%s", d)
	}
	if got := len(f.Find("wana")); got != 2 {
		t.Errorf("Find(wana): %d stanzas, want 2", got)
	}
}

// TestVariablesAsIfquery compares what Variables makes of every stanza
// with what ifupdown's own `ifquery` prints for it: the options after
// ifupdown's defaults and conversions, commands aside.
func TestVariablesAsIfquery(t *testing.T) {
	ifquery, err := exec.LookPath("ifquery")
	if err != nil {
		t.Skip("no ifquery (Debian's ifupdown) to compare with")
	}
	f, err := Read(site)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range f.Stanzas {
		if seen[s.Name] || s.Name == "lo" {
			continue
		}
		seen[s.Name] = true
		out, err := exec.Command(ifquery, "-i", site, s.Name).CombinedOutput()
		if err != nil {
			t.Fatalf("ifquery %s: %v\n%s", s.Name, err, out)
		}
		var want []string
		for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
			name, _, _ := strings.Cut(line, ": ")
			if !commands[name] {
				want = append(want, line)
			}
		}
		var got []string
		for _, st := range f.Find(s.Name) {
			for _, v := range st.Variables("") {
				got = append(got, strings.Split(v.Name+": "+v.Value, "\n")...)
			}
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s (-ifquery +Variables):\n%s", s.Name, d)
		}
	}
}

// TestConversions checks ifupdown's conversions one by one, as ifquery
// shows them on ifupdown 0.8.41.
func TestConversions(t *testing.T) {
	for _, tc := range []struct {
		family, method string
		options        []Option
		iface          string
		want           []Variable
	}{
		{"inet", "static", opts("address 192.0.2.1/31", "broadcast -"), "", vs("address 192.0.2.1", "broadcast 0.0.0.0", "netmask 255.255.255.254")},
		{"inet", "static", opts("address 192.0.2.1/255.255.0.0"), "", vs("address 192.0.2.1", "broadcast 192.0.255.255", "netmask 255.255.0.0")},
		{"inet", "static", opts("address 192.0.2.1/24", "netmask 255.255.0.0"), "", vs("address 192.0.2.1", "netmask 255.255.0.0", "broadcast 192.0.255.255")},
		{"inet", "static", opts("address 203.0.113.2"), "", vs("address 203.0.113.2", "broadcast 203.0.113.255", "netmask 255.255.255.0")},
		{"inet", "static", opts("address 10.0.0.2"), "", vs("address 10.0.0.2", "broadcast 10.255.255.255", "netmask 255.0.0.0")},
		{"inet", "static", opts("address 203.0.113.2", "netmask 24"), "", vs("address 203.0.113.2", "netmask 24", "broadcast +")},
		{"inet", "static", opts("address banana/24"), "", vs("address banana", "broadcast +", "netmask banana/24")},
		{"inet", "dhcp", opts("hwaddress ether 02:00:00:00:00:01"), "", vs("hwaddress 02:00:00:00:00:01")},
		{"inet6", "static", opts("address 2001:db8::1/64/7", "accept_ra 1", "gateway fe80::1"), "",
			vs("address 2001:db8::1", "accept_ra 1", "gateway fe80::1", "autoconf 0", "preferred-lifetime ", "dad-attempts 60", "dad-interval 0.1", "netmask 64")},
		{"inet6", "static", opts("address 2001:db8::1"), "", vs("address 2001:db8::1", "autoconf 0", "preferred-lifetime ", "dad-attempts 60", "dad-interval 0.1", "netmask ")},
		{"inet6", "v4tunnel", opts("local 192.0.2.1"), "x:1", vs("local 192.0.2.1", "preferred-lifetime 0")},
		{"inet6", "auto", nil, "", vs("accept_ra 2", "request_prefix 0", "ll-attempts 60", "ll-interval 0.1")},
	} {
		s := &Stanza{Name: "x", Family: tc.family, Method: tc.method, Options: tc.options}
		if d := cmp.Diff(tc.want, s.Variables(tc.iface)); d != "" {
			t.Errorf("%s %s %v (-want +got):\n%s", tc.family, tc.method, tc.options, d)
		}
	}
}

func opts(lines ...string) []Option {
	var list []Option
	for _, l := range lines {
		name, value, _ := strings.Cut(l, " ")
		list = append(list, Option{Name: name, Value: value})
	}
	return list
}

func vs(lines ...string) []Variable {
	var list []Variable
	for _, l := range lines {
		name, value, _ := strings.Cut(l, " ")
		list = append(list, Variable{name, value})
	}
	return list
}

func TestEnv(t *testing.T) {
	f, err := Read(site)
	if err != nil {
		t.Fatal(err)
	}
	env := f.Find("wana")[0].Env("", "pre-up")
	for _, want := range []string{"IFACE=wana", "LOGICAL=wana", "ADDRFAM=inet", "METHOD=static", "MODE=start", "PHASE=pre-up",
		"IF_ADDRESS=198.51.100.2", "IF_NETMASK=255.255.255.0", "IF_ISP_TABLE=ispa",
		"IF_ISP_SOURCE=198.51.100.64/28 \t  198.51.100.80/28\n192.0.2.0/29", "IFUPDOWN_wana=pre-up"} {
		if !slices.Contains(env, want) {
			t.Errorf("no %q in %q", want, env)
		}
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "IF_UP=") || strings.HasPrefix(kv, "IF_DOWN=") {
			t.Errorf("command exported: %q", kv)
		}
	}
	vlan := (&Stanza{Name: "eth2.4", Family: "inet", Method: "manual"}).Env("", "post-down")
	for _, want := range []string{"IFUPDOWN_eth2=parent-lock", "IFUPDOWN_eth2.4=post-down", "MODE=stop"} {
		if !slices.Contains(vlan, want) {
			t.Errorf("no %q in %q", want, vlan)
		}
	}
	if got := EnvName("isp.weird!opt-Mixed_9"); got != "ISPWEIRDOPT_MIXED_9" {
		t.Errorf("EnvName: %q", got)
	}
}

// TestSyntaxErrors is what ifupdown refuses, each on its line.
func TestSyntaxErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       []string // "LINE: start of message"
	}{
		{"option before any stanza", "isp-table ispa\niface wana inet static\n\taddress 198.51.100.2/24\n", []string{"1: misplaced option \"isp-table\""}},
		{"option after auto", "iface wana inet manual\nauto wana\n\tisp-table ispa\n", []string{"3: misplaced option \"isp-table\""}},
		{"empty value", "iface wana inet static\n\taddress 198.51.100.2/24\n\tisp-table\n", []string{"3: isp-table: option with empty value"}},
		{"empty value after continuation", "iface wana inet static\n\tisp-table \\\n\n", []string{"2: isp-table: option with empty value"}},
		{"no family", "iface wana\n", []string{"1: too few parameters for iface line"}},
		{"unknown family", "iface wana inet4 static\n\taddress 198.51.100.2/24\n", []string{"1: unknown or no address type"}},
		{"unknown method", "iface wana inet statc\n\taddress 198.51.100.2/24\n", []string{"1: unknown or no method"}},
		{"option on the iface line", "iface wana inet static isp-table ispa\n\taddress 198.51.100.2/24\n", []string{"1: extra parameter for the iface line not understood and ignored: isp-table"}},
		{"inherits nothing", "iface wana inet static inherits base\n", []string{"1: unknown iface to inherit from: base (inet)"}},
		{"inherits without parent", "iface wana inet static inherits\n", []string{"1: 'inherits' keyword is missing a parameter"}},
		{"mapping option", "mapping eth*\n\tscript /bin/true\n\tisp-table ispa\n", []string{"3: misplaced option \"isp-table\""}},
		{"two errors", "\n\n# comment\\\nisp-metric 1\niface wana inet static\n\taddress \\\n\t\\\n\n", []string{"4: misplaced option \"isp-metric\"", "6: address: option with empty value"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "interfaces")
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Read(path)
			var errs Errors
			if !errors.As(err, &errs) || len(errs) != len(tc.want) {
				t.Fatalf("got %v, want %d errors", err, len(tc.want))
			}
			for i, e := range errs {
				var se *SyntaxError
				if !errors.As(e, &se) || !strings.HasPrefix(e.Error(), path+":"+tc.want[i]) {
					t.Errorf("error %d: %v, want %s:%s...", i, e, path, tc.want[i])
				}
			}
		})
	}
}

// TestSourceMissing is ifupdown's silence about a sourced file that does
// not exist, and its refusal of an interfaces file that does not.
func TestSourceMissing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "interfaces")
	if err := os.WriteFile(path, []byte("source nosuch\nsource-directory nosuch.d\nsource interfaces\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Read(path)
	if err != nil || len(f.Files) != 1 {
		t.Errorf("got %v, files %v; want no error, one file", err, f.Files)
	}
	if _, err := Read(filepath.Join(dir, "nosuch")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
}
