package integration

import (
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/ifisp/ifisp/pkg/lab"
)

func TestZZProbe(t *testing.T) {
	bare := regexp.MustCompile(`(?m)^\t(isp|snat)-.*\n`).ReplaceAllString(lab.TwoISPs, "")
	measure := func(name, interfaces string, install func(l *lab.Lab)) {
		l := lab.New(t)
		install(l)
		l.Interfaces(interfaces)
		var times []time.Duration
		for range 10 {
			s := time.Now()
			l.MustIfup("wana", "wanb")
			l.MustIfdown("wana", "wanb")
			times = append(times, time.Since(s))
		}
		slices.Sort(times)
		t.Logf("%-20s %v", name, times[5].Round(time.Millisecond))
	}
	for range 2 {
		measure("bare", bare, func(l *lab.Lab) {})
		measure("seed", lab.Seed, func(l *lab.Lab) {})
		measure("true hooks", bare, func(l *lab.Lab) {
			hooks, _ := lab.Layout()
			for _, h := range hooks {
				l.Symlink("/bin/true", filepath.Join(l.Etc(), "network", h.Folder, h.Name))
			}
		})
		measure("hello hooks", bare, func(l *lab.Lab) {
			hooks, _ := lab.Layout()
			for _, h := range hooks {
				l.Symlink("/tmp/hellobin", filepath.Join(l.Etc(), "network", h.Folder, h.Name))
			}
		})
		measure("ifisp", lab.TwoISPs, func(l *lab.Lab) { l.Install(bin) })
		measure("ifisp route only", lab.TwoISPs, func(l *lab.Lab) { l.Install(bin, "ifisp-route") })
		measure("ifisp no conntrack", lab.TwoISPs, func(l *lab.Lab) { l.Install(bin, "ifisp-route", "ifisp-snat", "ifisp-6rd") })
	}
}
