package converge

import "testing"

func TestSummary(t *testing.T) {
	p := func(link, what string) Piece { return Piece{Link: link, Missing: true, Kind: "iptables", What: what} }
	got := Summary([]Piece{
		p("wana inet", "-t nat -N IFISP-SNAT"), p("wana inet", "-t nat -N IFISP-SNAT-wana"),
		p("wana inet", "-t nat -A POSTROUTING"), p("wana inet", "-t filter -N IFISP-GUARD"),
		p("wanb inet", "-t nat -N IFISP-SNAT-wanb"),
	})
	want := "wana inet: 4 pieces: missing iptables -t nat -N IFISP-SNAT, missing iptables -t nat -N IFISP-SNAT-wana, missing iptables -t nat -A POSTROUTING, and 1 more (ifisp status lists them); wanb inet: missing iptables -t nat -N IFISP-SNAT-wanb"
	if got != want {
		t.Errorf("Summary:\n got %s\nwant %s", got, want)
	}
}
