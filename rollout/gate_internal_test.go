package rollout

import (
	"slices"
	"testing"
	"time"
)

func TestPausesBackOffInProportionToTheWait(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name string
		most time.Duration
		// at are the times since the start a pause is asked at; want the pauses.
		at, want []time.Duration
	}{
		{name: "default poll", most: 250 * ms,
			at:   []time.Duration{0, 5 * ms, 39 * ms, 40 * ms, 80 * ms, 400 * ms, 800 * ms, 2 * time.Second, 10 * time.Second},
			want: []time.Duration{5 * ms, 5 * ms, 5 * ms, 5 * ms, 10 * ms, 50 * ms, 100 * ms, 250 * ms, 250 * ms}},
		{name: "a poll shorter than the first pause", most: 2 * ms,
			at: []time.Duration{0, time.Second}, want: []time.Duration{2 * ms, 2 * ms}},
		{name: "no poll set: a second at most", most: 0,
			at: []time.Duration{0, 4 * time.Second, 20 * time.Second}, want: []time.Duration{5 * ms, 500 * ms, time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Date(2026, 12, 3, 20, 0, 0, 0, time.UTC)
			ps := newPauses(start, tc.most)
			var got []time.Duration
			for _, at := range tc.at {
				got = append(got, ps.pause(start.Add(at)))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("pauses = %v, want %v", got, tc.want)
			}
			later := start.Add(tc.at[len(tc.at)-1])
			ps.reset(later)
			if d := ps.pause(later); d != tc.want[0] {
				t.Errorf("after reset: %v, want %v", d, tc.want[0])
			}
		})
	}
}
