package lab

import (
	"strings"
	"testing"
)

func TestReplace(t *testing.T) {
	got := Replace(TwoISPs, "wanb", "inet", "iface wanb inet dhcp\n\tisp-table ispb\n")
	if strings.Contains(got, "address 203.0.113.2/24") || !strings.Contains(got, "\niface wanb inet dhcp\n\tisp-table ispb\n\niface wanb inet6 static") {
		t.Errorf("wanb inet not replaced in place:\n%s", got)
	}
	if strings.Replace(got, "iface wanb inet dhcp\n\tisp-table ispb", "", 1) != strings.Replace(TwoISPs, "iface wanb inet static\n\taddress 203.0.113.2/24\n\tgateway 203.0.113.1\n\tisp-table ispb\n\tsnat-from 10.1.0.0/24", "", 1) {
		t.Errorf("more than wanb inet changed:\n%s", got)
	}
	if got := Replace(TwoISPs, "wanb", "inet6", ""); got+"\niface wanb inet6 static\n\taddress 2001:db8:b::2/64\n\tgateway 2001:db8:b::1\n\tmetric 1\n\tisp-table ispb\n" != TwoISPs {
		t.Errorf("wanb inet6, the last stanza, not removed, or the file's end not kept:\n%q", got)
	}
	if got := Replace(TwoISPs, "wana", "inet", ""); !strings.HasPrefix(got, "\niface wana inet6 static\n") || strings.Contains(got, "\n\n\n") {
		t.Errorf("wana inet, the first stanza, not removed, or the file's start not kept:\n%q", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("Replace of a stanza that is not there did not panic")
		}
	}()
	Replace(TwoISPs, "wanc", "inet", "iface wanc inet dhcp\n")
}
