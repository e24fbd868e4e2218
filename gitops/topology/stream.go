package topology

import (
	"context"
	"errors"
	"iter"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// Load folds the events under dir: what Fold(events.Load(ctx, dir)) returns, with the problems of both
// in the same order, but reading one file at a time (events.Stream), so that the memory it needs grows
// with the topology and not with the history. A log whose files are not named in the order of their
// events is read whole and sorted, as events.Load does. Problems are cut at events.MaxProblems of each
// kind.
func Load(ctx context.Context, dir string) (*Topology, events.Problems) {
	return LoadWithin(ctx, dir, events.Limits{})
}

// LoadWithin is Load within limits (see events.Limits).
func LoadWithin(ctx context.Context, dir string, limits events.Limits) (*Topology, events.Problems) {
	var read events.Problems
	var err error
	t, folded := FoldSeq(func(yield func(*events.Event) bool) {
		read, err = limits.Stream(ctx, dir, yield)
	})
	switch {
	case errors.Is(err, events.ErrUnordered):
		evs, problems := limits.Load(ctx, dir)
		t, folded = Fold(evs)
		read = bound(problems)
	case err != nil: // events.Load returns no events: the fold is that of none
		t, folded = Fold(nil)
	}
	return t, append(read, folded...)
}

// bound cuts ps at events.MaxProblems, with the problem that counts the others.
func bound(ps events.Problems) events.Problems {
	ps, n := ps.Trim()
	if n > 0 {
		ps = append(ps, events.Omitted(n))
	}
	return ps
}

// trim keeps the fold's problems within events.MaxProblems (and a little more, so that it does not
// run for every problem), counting the others in omitted.
func (f *folder) trim(omitted *int) {
	if len(f.problems) > 2*events.MaxProblems {
		var n int
		f.problems, n = f.problems.Trim()
		*omitted += n
	}
}

// bounded is the fold's problems cut at events.MaxProblems, with the one that counts the others.
func (f *folder) bounded(omitted int) events.Problems {
	ps, n := f.problems.Trim()
	if n += omitted; n > 0 {
		ps = append(ps, events.Omitted(n))
	}
	return ps
}

// pointers yields a pointer to each of evs.
func pointers(evs []events.Event) iter.Seq[*events.Event] {
	return func(yield func(*events.Event) bool) {
		for i := range evs {
			if !yield(&evs[i]) {
				return
			}
		}
	}
}
