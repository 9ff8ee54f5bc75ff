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
	defer func() {
		if recover() == nil {
			t.Error("Replace of a stanza that is not there did not panic")
		}
	}()
	Replace(TwoISPs, "wanc", "inet", "iface wanc inet dhcp\n")
}
