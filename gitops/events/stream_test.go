package events_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/events/eventstest"
)

// streamed is what Stream gives: the events fn got, the problems and the error.
type streamed struct {
	evs      []events.Event
	problems events.Problems
	err      error
}

func stream(ctx context.Context, l events.Limits, dir string) streamed {
	var s streamed
	s.problems, s.err = l.Stream(ctx, dir, func(ev *events.Event) bool {
		s.evs = append(s.evs, *ev)
		return true
	})
	return s
}

// lines renders problems as their messages and causes, to compare two lists.
func lines(ps events.Problems) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s [cause: %v]", p, p.Err))
	}
	return out
}

// TestStreamGivesWhatLoadGives runs Stream and Load over the same directories, from a good log to
// hostile ones: Stream passes the events Load returns, in its order and with the same sources, and
// returns the same problems (files, lines, sequences, ids, fields, messages and causes) in the same
// order; where Load returns no events, Stream says ErrStopped.
func TestStreamGivesWhatLoadGives(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		limits  events.Limits
		files   map[string]string
		setup   func(t *testing.T, dir string)
		stopped bool // Load returns no events: Stream returns ErrStopped
		broken  bool // Load returns events and problems
	}{
		{name: "the fixtures", setup: func(t *testing.T, dir string) { copyDir(t, "../../fixtures/events", dir) }},
		{
			name: "NDJSON files in order, in subdirectories too",
			files: map[string]string{
				"a/0001.ndjson": env("1", "a", "DomainCreated") + "\n\n" + env("2", "b", "NodeAdded") + "\n",
				"a/0002.json":   env("3", "c", "NodeAdded"),
				"b/0003.jsonl":  env("4", "d", "NodeUpdated") + "\n" + env("5", "e", "ServiceAdded"),
				"README.md":     "not an event",
			},
		},
		{
			name: "gaps, repeated sequences and ids, unknown types, broken lines",
			files: map[string]string{
				"0001.ndjson": env("2", "a", "DomainCreated") + "\n" + env("2", "b", "NodeAdded") + "\n{not json\n" +
					env("3", "a", "NodeAdded") + "\n" + env("7", "x", "SomethingElse") + "\n" + `{"event_id":"y"}` + "\n",
				"0002.ndjson": env("7", "z", "NodeAdded") + "\n" + env("9", "b", "NodeRemoved") + "\n" + env("9", "w", "NodeRemoved"),
				"0003.json":   `{"event_id":"q","aggregate_id":"cim","sequence":10,"timestamp":"yesterday","event_type":"NodeAdded","data":{}}`,
				"0004.json":   "\xff\xfe",
				"0005.json":   env("11", "bad id!", "NodeAdded"),
				"0006.json":   `{"event_id":"k","aggregate_id":"cim","sequence":12,"timestamp":"2025-11-20T10:00:00Z","event_type":"NodeAdded","data":[]}`,
				"0007.json":   "",
			},
			broken: true,
		},
		{name: "no event files", files: map[string]string{"README.md": "x"}, stopped: true},
		{
			name:  "a symbolic link",
			files: map[string]string{"0001.json": env("1", "a", "DomainCreated")},
			setup: func(t *testing.T, dir string) {
				if err := os.Symlink("/etc/passwd", filepath.Join(dir, "0002.json")); err != nil {
					t.Fatal(err)
				}
			},
			stopped: true,
		},
		{
			name:  "a FIFO",
			files: map[string]string{"0001.json": env("1", "a", "DomainCreated"), "0003.json": env("2", "b", "NodeAdded")},
			setup: func(t *testing.T, dir string) {
				if err := syscall.Mkfifo(filepath.Join(dir, "0002.json"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			stopped: true,
		},
		{
			name:   "a file over the limit",
			limits: events.Limits{FileSize: 300},
			files: map[string]string{"0001.json": env("1", "a", "DomainCreated"), "0002.ndjson": env("2", "b", "NodeAdded") + "\n" + env("3", "c", "NodeAdded"),
				"0003.json": env("4", "d", "NodeAdded")},
			broken: true,
		},
		{
			name:    "over the total limit",
			limits:  events.Limits{TotalSize: 2 * int64(len(env("1", "a", "DomainCreated")))},
			files:   map[string]string{"0001.json": env("1", "a", "DomainCreated"), "0002.json": "{", "0003.json": env("2", "b", "NodeAdded"), "0004.json": env("3", "c", "NodeAdded")},
			stopped: true,
		},
		{
			name:    "too many files",
			limits:  events.Limits{Files: 2},
			files:   map[string]string{"0001.json": env("1", "a", "DomainCreated"), "0002.json": env("2", "b", "NodeAdded"), "0003.json": env("3", "c", "NodeAdded")},
			stopped: true,
		},
		{name: "no directory", setup: func(t *testing.T, dir string) { os.Remove(dir) }, stopped: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for name, data := range tt.files {
				write(t, filepath.Join(dir, name), data)
			}
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			want, wantProblems := tt.limits.Load(t.Context(), dir)
			got := stream(t.Context(), tt.limits, dir)
			if tt.stopped != errors.Is(got.err, events.ErrStopped) || (!tt.stopped && got.err != nil) {
				t.Fatalf("Stream returned %v, want ErrStopped: %t", got.err, tt.stopped)
			}
			if tt.stopped && len(want) > 0 {
				t.Fatalf("Load returned %d events where the test expects none", len(want))
			}
			if !tt.stopped && !reflect.DeepEqual(got.evs, want) {
				t.Errorf("Stream passed %d events, Load returns %d:\n%+v\n%+v", len(got.evs), len(want), got.evs, want)
			}
			if g, w := lines(got.problems), lines(wantProblems); !reflect.DeepEqual(g, w) {
				t.Errorf("problems differ:\nStream: %s\nLoad:   %s", strings.Join(g, "\n        "), strings.Join(w, "\n        "))
			}
			if broken := len(wantProblems) > 0; broken != (tt.stopped || tt.broken) {
				t.Errorf("Load reports %d problems, the test expects some: %t", len(wantProblems), tt.stopped || tt.broken)
			}
		})
	}
}

// TestStreamRefusesAnUnorderedLog: files whose names do not follow their events' order (and an NDJSON
// file whose lines go back) are for Load, which sorts the whole log; Stream says so.
func TestStreamRefusesAnUnorderedLog(t *testing.T) {
	t.Parallel()
	for name, files := range map[string]map[string]string{
		"files": {"a.json": env("2", "b", "NodeAdded"), "b.json": env("1", "a", "DomainCreated")},
		"lines": {"0001.ndjson": env("1", "a", "DomainCreated") + "\n" + env("3", "c", "NodeAdded") + "\n" + env("2", "b", "NodeAdded")},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for name, data := range files {
				write(t, filepath.Join(dir, name), data)
			}
			if got := stream(t.Context(), events.Limits{}, dir); !errors.Is(got.err, events.ErrUnordered) || got.problems != nil {
				t.Fatalf("got %v, %v; want ErrUnordered and no problems", got.err, got.problems)
			}
		})
	}
}

// TestStreamStops: a cancelled context stops Stream between files with a problem whose cause is the
// context's, as Load does; fn returning false stops it too.
func TestStreamStops(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for i := range 5 {
		write(t, filepath.Join(dir, fmt.Sprintf("%04d.json", i+1)), env(fmt.Sprint(i+1), fmt.Sprint("e", i), "NodeAdded"))
	}
	ctx, cancel := context.WithCancel(t.Context())
	n := 0
	problems, err := events.Stream(ctx, dir, func(*events.Event) bool {
		if n++; n == 2 {
			cancel()
		}
		return true
	})
	if !errors.Is(err, events.ErrStopped) || !errors.Is(problems, context.Canceled) || n != 2 {
		t.Errorf("after a cancel: %d events, %v, %v", n, err, problems)
	}
	n = 0
	_, err = events.Stream(t.Context(), dir, func(*events.Event) bool { n++; return n < 3 })
	if !errors.Is(err, events.ErrStopped) || n != 3 {
		t.Errorf("fn returning false: %d events, %v", n, err)
	}
}

// TestStreamBoundsItsProblems: a log broken on every line keeps MaxProblems problems of each kind and
// one that counts the others, not one per line.
func TestStreamBoundsItsProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var b strings.Builder
	for i := range 3 * events.MaxProblems {
		fmt.Fprintln(&b, "{broken")
		fmt.Fprintln(&b, env(fmt.Sprint(2*i+2), fmt.Sprint("e", i), "NodeAdded")) // a gap before each
	}
	write(t, filepath.Join(dir, "0001.ndjson"), b.String())
	got := stream(t.Context(), events.Limits{}, dir)
	if got.err != nil || len(got.evs) != 3*events.MaxProblems {
		t.Fatalf("%d events, %v", len(got.evs), got.err)
	}
	if len(got.problems) != 2*events.MaxProblems+2 {
		t.Fatalf("%d problems, want %d", len(got.problems), 2*events.MaxProblems+2)
	}
	for _, i := range []int{events.MaxProblems, 2*events.MaxProblems + 1} {
		if want := fmt.Sprintf("and %d more problems of this kind, not kept", 2*events.MaxProblems); !strings.Contains(got.problems[i].Message, want) {
			t.Errorf("problem %d is %q, want %q", i, got.problems[i].Message, want)
		}
	}
	if p := got.problems[events.MaxProblems+1]; p.Field != "sequence" || p.Sequence != 2 {
		t.Errorf("the order's problems do not follow the reading's: %v", p)
	}
}

// TestStreamReadsASyntheticHistory: the benchmarks' log reads without problems, in order.
func TestStreamReadsASyntheticHistory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := eventstest.History{Nodes: 20, Events: 3000, PerFile: 700}
	if _, err := h.Write(dir); err != nil {
		t.Fatal(err)
	}
	got := stream(t.Context(), events.Limits{}, dir)
	if got.err != nil || len(got.problems) > 0 || len(got.evs) != h.Events {
		t.Fatalf("%d events of %d: %v %v", len(got.evs), h.Events, got.err, got.problems)
	}
	for i, ev := range got.evs {
		if ev.Sequence != uint64(i+1) {
			t.Fatalf("event %d has sequence %d", i, ev.Sequence)
		}
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(to, e.Name()), string(data))
	}
}
