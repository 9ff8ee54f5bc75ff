package lab

import (
	"fmt"
	"time"
)

// AnswerWithin is how soon an answer must come for its request to count
// as answered: 50 request periods, as long as ping's -W 1 waits. A TCP
// flow that stalled answers, once it moves again, every request it
// buffered meanwhile; those answers are late, and the requests lost.
const AnswerWithin = time.Second

// Request is one request of a flow or a ping: when it was sent, and when,
// if ever, its answer came.
type Request struct {
	Seq      int       `json:"seq"`
	Sent     time.Time `json:"sent"`
	Answered time.Time `json:"answered,omitzero"` // zero: never
}

// OK reports whether the request was answered within AnswerWithin.
func (r Request) OK() bool { return !r.Answered.IsZero() && r.Answered.Sub(r.Sent) <= AnswerWithin }

// Requests are the requests of one flow or ping, in the order they were
// sent. Its methods judge the flow against events (the moment a link went
// down, the moment a change was complete, the first answer after it),
// never against a moment a clock picked.
type Requests []Request

// Count returns how many requests were sent in [from, to), and how many of
// those were answered (in time, OK).
func (rs Requests) Count(from, to time.Time) (sent, answered int) {
	for _, r := range rs {
		if !r.Sent.Before(from) && r.Sent.Before(to) {
			sent++
			if r.OK() {
				answered++
			}
		}
	}
	return sent, answered
}

// Gap returns the longest time in [from, to) without an answered request
// sent: from from to the first one, from each to the next, from the last
// one to to. A flow that is never answered in that time has a gap of
// to - from.
func (rs Requests) Gap(from, to time.Time) time.Duration {
	var gap time.Duration
	prev := from
	for _, r := range rs {
		if !r.OK() || r.Sent.Before(from) || !r.Sent.Before(to) {
			continue
		}
		gap = max(gap, r.Sent.Sub(prev))
		prev = r.Sent
	}
	return max(gap, to.Sub(prev))
}

// Recovery finds the first run of n requests in a row answered among those
// sent at or after from: the flow works again from the first of them. It
// returns when that one was sent; ok is false when there is no such run.
func (rs Requests) Recovery(from time.Time, n int) (at time.Time, ok bool) {
	run := 0
	for _, r := range rs {
		if r.Sent.Before(from) {
			continue
		}
		if !r.OK() {
			run = 0
			continue
		}
		if run++; run == 1 {
			at = r.Sent
		}
		if run >= n {
			return at, true
		}
	}
	return time.Time{}, false
}

// FirstAnswered returns the first request sent at or after from that was
// answered; ok is false when there is none.
func (rs Requests) FirstAnswered(from time.Time) (r Request, ok bool) {
	for _, r := range rs {
		if !r.Sent.Before(from) && r.OK() {
			return r, true
		}
	}
	return Request{}, false
}

// FlowResult is what one flow's client saw.
type FlowResult struct {
	Requests Requests
	// Sent and Received count all of Requests, and those answered.
	Sent, Received int
	// Resets counts TCP connections that broke (and were made again).
	Resets int
	// End is when the flow stopped: its last requests may have been cut
	// off before their answers came.
	End time.Time
}

func newFlowResult(rs Requests, resets int, end time.Time) FlowResult {
	r := FlowResult{Requests: rs, Sent: len(rs), Resets: resets, End: end}
	for _, q := range rs {
		if q.OK() {
			r.Received++
		}
	}
	return r
}

func (r FlowResult) String() string {
	return fmt.Sprintf("%d requests, %d answered, %d resets", r.Sent, r.Received, r.Resets)
}
