package lab

import (
	"testing"
	"time"
)

// pattern makes requests 20 ms apart from t0, one per byte of p: '.'
// answered at once, 'l' answered late (past AnswerWithin), 'x' never.
func pattern(t0 time.Time, p string) Requests {
	var rs Requests
	for i, c := range p {
		r := Request{Seq: i, Sent: t0.Add(time.Duration(i) * 20 * time.Millisecond)}
		switch c {
		case '.':
			r.Answered = r.Sent.Add(time.Millisecond)
		case 'l':
			r.Answered = r.Sent.Add(AnswerWithin + time.Millisecond)
		}
		rs = append(rs, r)
	}
	return rs
}

func TestRequests(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * 20 * time.Millisecond) }
	rs := pattern(t0, "...xxlx.x...x....")
	if sent, answered := rs.Count(at(2), at(8)); sent != 6 || answered != 2 {
		t.Errorf("Count(2, 8) = %d, %d; want 6, 2 (a late answer is no answer)", sent, answered)
	}
	for _, tc := range []struct {
		from, n int
		want    int // index of the run's first request, -1: none
	}{
		{0, 3, 0}, {1, 3, 9}, {0, 4, 13}, {0, 5, -1}, {14, 1, 14}, {17, 1, -1},
	} {
		got, ok := rs.Recovery(at(tc.from), tc.n)
		if tc.want < 0 {
			if ok {
				t.Errorf("Recovery(%d, %d) = %v, want none", tc.from, tc.n, got)
			}
			continue
		}
		if !ok || !got.Equal(at(tc.want)) {
			t.Errorf("Recovery(%d, %d) = %v %v, want request %d (%v)", tc.from, tc.n, got, ok, tc.want, at(tc.want))
		}
	}
	if r, ok := rs.FirstAnswered(at(3)); !ok || r.Seq != 7 {
		t.Errorf("FirstAnswered(3) = %+v %v, want request 7", r, ok)
	}
	if _, ok := rs.FirstAnswered(at(17)); ok {
		t.Error("FirstAnswered past the end found one")
	}
	for _, tc := range []struct {
		from, to int
		want     time.Duration
	}{
		{0, 17, 100 * time.Millisecond}, // from request 2 to request 7
		{3, 7, 80 * time.Millisecond},   // nothing answered at all in between
		{13, 17, 20 * time.Millisecond},
		{13, 30, 14 * 20 * time.Millisecond}, // from the last answer to the end
	} {
		if got := rs.Gap(at(tc.from), at(tc.to)); got != tc.want {
			t.Errorf("Gap(%d, %d) = %s, want %s", tc.from, tc.to, got, tc.want)
		}
	}
}
