package rollout

import (
	"slices"
	"testing"
	"time"
)

func TestPausesGrowToTheGatePollAndStartOver(t *testing.T) {
	for _, tc := range []struct {
		name string
		most time.Duration
		want []time.Duration
	}{
		{name: "default poll", most: 250 * time.Millisecond, want: []time.Duration{
			5 * time.Millisecond, 7 * time.Millisecond, 9800 * time.Microsecond, 13720 * time.Microsecond,
			19208 * time.Microsecond, 26891200, 37647680, 52706752, 73789452, 103305232, 144627324, 202478253,
			250 * time.Millisecond, 250 * time.Millisecond}},
		{name: "a poll shorter than the first pause", most: 2 * time.Millisecond, want: []time.Duration{
			2 * time.Millisecond, 2 * time.Millisecond}},
		{name: "no poll set: a second at most", most: 0, want: []time.Duration{5 * time.Millisecond, 7 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := newPauses(tc.most)
			var got []time.Duration
			for range tc.want {
				got = append(got, ps.pause())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("pauses = %v, want %v", got, tc.want)
			}
			ps.reset()
			if d := ps.pause(); d != tc.want[0] {
				t.Errorf("after reset: %v, want %v", d, tc.want[0])
			}
		})
	}
}
