package watch

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/rundir"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// StatusFile is the monitor's state file in the run directory, rewritten
// atomically on every change, removed when the monitor stops.
const StatusFile = "watch.json"

// Status is what the monitor thinks of every link it watches.
type Status struct {
	PID     int          `json:"pid"`
	Written time.Time    `json:"written"` // when the monitor wrote the file
	Links   []LinkStatus `json:"links"`
}

// LinkStatus is one link's health and what the monitor did about it.
type LinkStatus struct {
	Iface     string        `json:"iface"`
	Family    stanza.Family `json:"family"`
	State     State         `json:"state"`
	Withdrawn bool          `json:"withdrawn"` // its main-table defaults are withdrawn
	Reason    string        `json:"reason"`
	Since     time.Time     `json:"since"`      // in this state since
	Up        time.Time     `json:"registered"` // when ifup registered it
	Probes    ProbeStats    `json:"probes"`     // as of the file's last rewrite
	// Repairs counts the pieces of the link's plan the monitor put back
	// since it began watching this registration (the file is rewritten
	// at each repair).
	Repairs int `json:"repairs"`
}

// ReadStatus reads the state file; with no monitor running it returns nil.
func ReadStatus() (*Status, error) {
	b, err := rundir.Read(StatusFile)
	if err != nil || b == nil {
		return nil, err
	}
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(rundir.Dir(), StatusFile), err)
	}
	return &s, nil
}

// Link returns the monitor's view of iface and family f, or nil.
func (s *Status) Link(iface string, f stanza.Family) *LinkStatus {
	if s == nil {
		return nil
	}
	for i := range s.Links {
		if l := &s.Links[i]; l.Iface == iface && l.Family == f {
			return l
		}
	}
	return nil
}

// find returns the view of reg if it is of the same registration, or nil.
func (s *Status) find(reg registry.Link) *LinkStatus {
	if l := s.Link(reg.Iface, reg.Family); l != nil && l.Up.Equal(reg.Since) {
		return l
	}
	return nil
}

// writeStatus writes the state file.
func (d *daemon) writeStatus() error {
	s := Status{PID: os.Getpid(), Written: time.Now(), Links: []LinkStatus{}}
	for _, k := range d.keys() {
		l := d.links[k]
		s.Links = append(s.Links, LinkStatus{Iface: l.reg.Iface, Family: l.reg.Family, State: l.health.state,
			Withdrawn: l.withdrawn, Reason: l.reason, Since: l.since, Up: l.reg.Since, Probes: l.probes.public(), Repairs: l.repairs})
	}
	b, err := json.MarshalIndent(&s, "", "  ")
	if err != nil {
		return err
	}
	if err := rundir.Write(StatusFile, append(b, '\n')); err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	return d.writeMetrics()
}

// removeStatus removes the state file.
func removeStatus() error { return rundir.Remove(StatusFile) }
