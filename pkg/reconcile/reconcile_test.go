package reconcile

import (
	"errors"
	"testing"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// fakeConn is a conntrack table whose dump fails as the kernel's can.
type fakeConn struct {
	flows     []conntrack.Flow
	failDumps []error
}

func (f *fakeConn) DumpFilter(conntrack.Filter, *conntrack.DumpOptions) ([]conntrack.Flow, error) {
	if len(f.failDumps) > 0 {
		err := f.failDumps[0]
		f.failDumps = f.failDumps[1:]
		return nil, err
	}
	return f.flows, nil
}

func (f *fakeConn) FlushFilter(conntrack.Filter) error { return nil }
func (f *fakeConn) Delete(conntrack.Flow) error        { return nil }

func TestDumpRetries(t *testing.T) {
	all := conntrack.NewFilter()
	ct := &fakeConn{flows: []conntrack.Flow{{ID: 7}}, failDumps: []error{unix.EINTR, unix.ENOBUFS}}
	got, err := Dump(ct, all)
	if err != nil || len(got) != 1 {
		t.Errorf("dump after two interrupted tries: %v, %v", got, err)
	}
	ct = &fakeConn{failDumps: []error{unix.EPERM}}
	if _, err := Dump(ct, all); !errors.Is(err, unix.EPERM) {
		t.Errorf("dump with EPERM: got %v, want it reported", err)
	}
	ct = &fakeConn{failDumps: []error{unix.EINTR, unix.EINTR, unix.EINTR, unix.EINTR, unix.EINTR, unix.EINTR}}
	if _, err := Dump(ct, all); err == nil {
		t.Error("dump interrupted every time: got no error")
	}
}
