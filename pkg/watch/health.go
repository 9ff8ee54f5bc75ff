package watch

// State is a link's health as the monitor judges it.
type State string

const (
	Up   State = "up"
	Down State = "down"
)

// health is the hysteresis of one link: down after `down` bad rounds in a
// row, up again after `up` good rounds in a row. Carrier or address loss
// skips the count.
type health struct {
	state     State
	bad, good int // rounds in a row, in the current state's opposite direction
}

// round records one probe round and reports whether the state changed.
func (h *health) round(ok bool, down, up int) bool {
	switch {
	case h.state == Up && ok:
		h.bad = 0
	case h.state == Up:
		h.bad++
		if h.bad >= down {
			h.set(Down)
			return true
		}
	case ok:
		h.good++
		if h.good >= up {
			h.set(Up)
			return true
		}
	default:
		h.good = 0
	}
	return false
}

// fail marks the link down at once (carrier or address lost) and reports
// whether the state changed; the count toward up starts over either way.
func (h *health) fail() bool {
	changed := h.state != Down
	h.set(Down)
	return changed
}

func (h *health) set(s State) {
	h.state, h.bad, h.good = s, 0, 0
}

// candidate is what the last-resort rule needs to know of a link.
type candidate struct {
	family   string
	state    State
	defaults bool // the link has main-table defaults to carry traffic
}

// withdrawals decides, for each link, whether its main-table defaults
// should be withdrawn: when it is down and another link of its family is
// up and has defaults to take the traffic. If every link of a family is
// down, none is withdrawn (last resort: a dead link may be less dead than no
// route at all, and ifupdown's routes are what the operator asked for).
func withdrawals(links []candidate) []bool {
	alive := map[string]bool{}
	for _, l := range links {
		if l.state == Up && l.defaults {
			alive[l.family] = true
		}
	}
	want := make([]bool, len(links))
	for i, l := range links {
		want[i] = l.state == Down && alive[l.family]
	}
	return want
}
