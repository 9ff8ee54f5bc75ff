package registry

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/rundir"
	"github.com/ifisp/ifisp/pkg/stanza"
)

func TestRoundTrip(t *testing.T) {
	t.Setenv(rundir.Env, t.TempDir())
	vlan := Link{Iface: "eth2.4", Family: stanza.Inet6, Table: 101,
		Address: netip.MustParseAddr("2001:db8:b::2"), Gateway: netip.MustParseAddr("fe80::1"),
		Defaults: []policy.Default{{Gateway: netip.MustParseAddr("fe80::1"), Metric: 1024, Protocol: 3, OnLink: true}},
		Interval: Duration(100 * time.Millisecond), Down: 10, Up: 30, Since: time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)}
	plain := Link{Iface: "wana", Family: stanza.Inet, Table: 100,
		Address: netip.MustParseAddr("198.51.100.2"), Gateway: netip.MustParseAddr("198.51.100.1"),
		Check:    []netip.Addr{netip.MustParseAddr("192.0.2.100")},
		Interval: Duration(time.Second), Down: 3, Up: 5, Since: time.Date(2026, 11, 25, 8, 0, 1, 0, time.UTC)}
	for _, l := range []*Link{&vlan, &plain} {
		if err := write(l); err != nil {
			t.Fatal(err)
		}
	}
	// What List must skip: a half-written temporary file of rundir.Write's.
	os.WriteFile(filepath.Join(Dir(), ".wanb.inet.json.123"), []byte("{"), 0o644)

	got, err := List()
	if err != nil {
		t.Fatal(err)
	}
	if want := []Link{vlan, plain}; !reflect.DeepEqual(got, want) {
		t.Errorf("List:\n%+v\nwant\n%+v", got, want)
	}
	if err := Forget("eth2.4", stanza.Inet6); err != nil {
		t.Fatal(err)
	}
	if err := Forget("eth2.4", stanza.Inet6); err != nil {
		t.Errorf("forgetting twice: %v", err)
	}
	if l, err := Read("eth2.4", stanza.Inet6); l != nil || err != nil {
		t.Errorf("Read after Forget: %+v, %v", l, err)
	}
}

func TestListBroken(t *testing.T) {
	t.Setenv(rundir.Env, t.TempDir())
	if links, err := List(); links != nil || err != nil {
		t.Errorf("List with no folder: %v, %v; want nothing", links, err)
	}
	rundir.Write(filepath.Join(Folder, "wana.inet.json"), []byte("not json"))
	if _, err := List(); err == nil {
		t.Error("a broken file listed without error")
	}
}
