package lab

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLinkWatchLagging(t *testing.T) {
	out := `lo               UNKNOWN        00:00:00:00:00:00 <LOOPBACK,UP,LOWER_UP>
lan0@if3         UP             aa:bb:cc:dd:ee:01 <BROADCAST,MULTICAST,UP,LOWER_UP>
wana@if4         DOWN           aa:bb:cc:dd:ee:02 <BROADCAST,MULTICAST>
wanb@if5         LOWERLAYERDOWN aa:bb:cc:dd:ee:03 <NO-CARRIER,BROADCAST,MULTICAST,UP,M-DOWN>
sixrd@NONE       UNKNOWN        <NOARP,UP,LOWER_UP>
eth0@if6         DOWN           aa:bb:cc:dd:ee:04 <BROADCAST,MULTICAST,UP,LOWER_UP>
eth1@if7         UP             aa:bb:cc:dd:ee:05 <BROADCAST,MULTICAST>
eth2@if8         UP             aa:bb:cc:dd:ee:06 <NO-CARRIER,BROADCAST,MULTICAST,UP>
`
	want := []string{
		"eth0@if6 DOWN <BROADCAST,MULTICAST,UP,LOWER_UP>",
		"eth1@if7 UP <BROADCAST,MULTICAST>",
		"eth2@if8 UP <NO-CARRIER,BROADCAST,MULTICAST,UP>",
	}
	if d := cmp.Diff(want, linkWatchLagging(out)); d != "" {
		t.Errorf("lagging interfaces (-want +got):\n%s", d)
	}
}
