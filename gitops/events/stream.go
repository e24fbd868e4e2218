package events

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"path/filepath"
)

// Errors of Stream besides its problems.
var (
	// ErrUnordered is Stream meeting an event whose sequence is lower than that of an event before it
	// in the files' lexical order (and their lines'): the log must be sorted whole, which Load does.
	ErrUnordered = errors.New("the event files do not hold the events in sequence order: the log must be sorted whole")
	// ErrStopped is Stream stopping before the end: the directory could not be listed or holds no
	// event file, a limit stopped reading, the context is done (a problem says which; Load returns
	// no events then), or fn asked to stop.
	ErrStopped = errors.New("reading the events stopped before the end")
)

// MaxProblems is how many problems of one kind (reading and parsing, order, fold) a run keeps. The
// others are counted in one problem after the kept ones (Omitted), so that a log broken everywhere
// cannot fill the memory with its problems. Problems with a cause (Problem.Err) are always kept.
const MaxProblems = 1000

// Trim returns the first MaxProblems problems of ps and those after them that have a cause, in their
// order, and how many it left out. It reuses ps's storage.
func (ps Problems) Trim() (Problems, int) {
	if len(ps) <= MaxProblems {
		return ps, 0
	}
	kept := ps[:MaxProblems]
	for _, p := range ps[MaxProblems:] {
		if p.Err != nil {
			kept = append(kept, p)
		}
	}
	n := len(ps) - len(kept)
	clear(ps[len(kept):])
	return kept, n
}

// Omitted is the problem that says n more problems were found and not kept.
func Omitted(n int) Problem {
	return Problem{Message: fmt.Sprintf("and %d more problems of this kind, not kept (cimdeploy keeps the first %d)", n, MaxProblems)}
}

// problemBound collects problems, keeping what Trim keeps.
type problemBound struct {
	ps      Problems
	omitted int
}

func (b *problemBound) add(ps ...Problem) {
	b.ps = append(b.ps, ps...)
	if len(b.ps) > 2*MaxProblems {
		var n int
		b.ps, n = b.ps.Trim()
		b.omitted += n
	}
}

// all is the problems kept, with the one that counts the others.
func (b *problemBound) all() Problems {
	ps, n := b.ps.Trim()
	if n += b.omitted; n > 0 {
		ps = append(ps, Omitted(n))
	}
	return ps
}

// Stream reads the events under dir with the default limits; see Limits.Stream.
func Stream(ctx context.Context, dir string, fn func(*Event) bool) (Problems, error) {
	return Limits{}.Stream(ctx, dir, fn)
}

// Stream reads the events under dir as Load does (the same files, limits, checks and problems), one
// file at a time, and calls fn with each event Load returns, in the same order: the memory it needs
// is one file's, not the log's. Each event fn gets is its own: fn may keep it. Besides the events in
// flight, Stream keeps 32 bytes an event for the check that event ids are unique, and MaxProblems of
// each kind.
//
// Stream returns the problems Load returns, in the same order (each kind cut at MaxProblems), and:
//   - nil when it read the log to its end;
//   - ErrStopped when reading stopped (a problem says why; Load would return no events at all, so
//     the events fn got don't make a log), or when fn returned false;
//   - ErrUnordered, with no problems, when an event's sequence is lower than one before it: files
//     named in the order of their events (0001.ndjson, 0002.ndjson, ...) are read in one pass, others
//     only by Load, which sorts the whole log. fn has then seen part of the log.
func (l Limits) Stream(ctx context.Context, dir string, fn func(*Event) bool) (Problems, error) {
	read, err := l.stream(ctx, dir, fn)
	for i := range read {
		read[i].Source.File = filepath.Join(dir, read[i].Source.File)
	}
	return read, err
}

func (l Limits) stream(ctx context.Context, dir string, fn func(*Event) bool) (Problems, error) {
	l = l.withDefaults()
	files, problems := l.walk(ctx, dir)
	if len(problems) > 0 {
		return problems, ErrStopped
	}
	if len(files) == 0 {
		return Problems{{Message: "no event files (*.json, *.ndjson, *.jsonl)"}}, ErrStopped
	}
	var read problemBound
	order := newOrderCheck(files)
	var total int64
	var buf []byte
	for fi, name := range files {
		if err := ctx.Err(); err != nil {
			read.add(Problem{Source: Source{File: name}, Message: "reading the events: " + err.Error(), Err: err})
			return read.all(), ErrStopped
		}
		data, err := readFileInto(ctx, filepath.Join(dir, name), l.FileSize, l.TotalSize-total, buf)
		if err != nil {
			var le *limitError
			if errors.As(err, &le) && le.total {
				read.add(Problem{Source: Source{File: name}, Message: fmt.Sprintf("the event files are larger than %s together (a limit of cimdeploy): reading stopped at this file", size(l.TotalSize))})
				return read.all(), ErrStopped
			}
			read.add(Problem{Source: Source{File: name}, Message: err.Error(), Err: errors.Unwrap(err)})
			if ctx.Err() != nil {
				return read.all(), ErrStopped
			}
			continue
		}
		buf = data
		total += int64(len(data))
		evs, ps := Parse(name, data)
		read.add(ps...)
		full := filepath.Join(dir, name)
		for i := range evs {
			ev := &evs[i]
			keep, ok := order.add(ev, fi)
			if !ok {
				return nil, ErrUnordered
			}
			if !keep || !known(ev.Type) {
				continue
			}
			out := new(Event)
			*out = *ev
			out.Source.File = full
			if !fn(out) {
				return append(read.all(), order.problems.all()...), ErrStopped
			}
		}
	}
	return append(read.all(), order.problems.all()...), nil
}

// orderCheck is Order for a log whose events arrive in sequence order (equal sequences allowed), one
// at a time: the same checks and problems, without holding the log. Event ids are remembered by a
// 128-bit hash under a seed of the run's: two different ids share one with a probability of about
// n²/2¹²⁹ (3·10⁻²⁹ for 100,000 events), and a hostile log cannot aim at it.
type orderCheck struct {
	files    []string // relative names, as the sources of the problems have them
	started  bool
	prevSeq  uint64
	prevSrc  Source
	seeds    [2]maphash.Seed
	ids      map[[2]uint64]idRef
	problems problemBound
}

// idRef is where an event id was first used.
type idRef struct {
	sequence uint64
	file     int32
	line     int32
}

func newOrderCheck(files []string) *orderCheck {
	return &orderCheck{files: files, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, ids: map[[2]uint64]idRef{}}
}

// add checks ev, read from file number file, against the events before it. keep reports whether ev
// is in the log (not a repeated sequence or id); ok is false when ev comes before an earlier one.
func (o *orderCheck) add(ev *Event, file int) (keep, ok bool) {
	switch {
	case o.started && ev.Sequence < o.prevSeq:
		return false, false
	case o.started && ev.Sequence == o.prevSeq:
		o.problems.add(ev.Problem("sequence", "duplicate sequence %d, also used at %s", ev.Sequence, o.prevSrc))
		return false, true
	case !o.started && ev.Sequence != 1:
		o.problems.add(ev.Problem("sequence", "gap: the log starts at %d, not 1", ev.Sequence))
	case o.started && ev.Sequence != o.prevSeq+1:
		o.problems.add(ev.Problem("sequence", "gap: sequences %d to %d are missing (previous event at %s)", o.prevSeq+1, ev.Sequence-1, o.prevSrc))
	}
	o.started, o.prevSeq, o.prevSrc = true, ev.Sequence, ev.Source
	h := [2]uint64{maphash.String(o.seeds[0], ev.EventID), maphash.String(o.seeds[1], ev.EventID)}
	if first, dup := o.ids[h]; dup {
		src := Source{File: o.files[first.file], Line: int(first.line)}
		o.problems.add(ev.Problem("event_id", "duplicate event id, first used by event %d at %s", first.sequence, src))
		return false, true
	}
	o.ids[h] = idRef{sequence: ev.Sequence, file: int32(file), line: int32(ev.Source.Line)}
	return true, true
}

// isID is idChars.MatchString(s), without the regexp machinery: it runs four times an event.
func isID(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == ':' || c == '-'):
		default:
			return false
		}
	}
	return s != ""
}
