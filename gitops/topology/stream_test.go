package topology_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/events/eventstest"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// TestLoadFoldsWhatFoldFolds runs topology.Load (streaming) and Fold over events.Load on the same
// directories: the same topology and the same problems, in the same order, for good logs, logs the
// fold refuses, logs read out of order (which Load sorts) and logs whose reading stops.
func TestLoadFoldsWhatFoldFolds(t *testing.T) {
	t.Parallel()
	history := func(h eventstest.History) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			t.Helper()
			if _, err := h.Write(dir); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name      string
		limits    events.Limits
		setup     func(t *testing.T, dir string)
		refused   bool // the fold reports problems
		unordered bool // events.Stream cannot read it in one pass
	}{
		{name: "the fixtures", setup: func(t *testing.T, dir string) { copyFiles(t, "../../fixtures/events", dir, nil) }},
		{name: "a synthetic history", setup: history(eventstest.History{Nodes: 30, Events: 2000, PerFile: 300})},
		{
			name: "a history the fold refuses in places",
			setup: func(t *testing.T, dir string) {
				history(eventstest.History{Nodes: 10, Events: 200, PerFile: 50})(t, dir)
				appendLines(t, filepath.Join(dir, "000004.ndjson"),
					envelope(201, "NodeUpdated", "nats-99", `{"name":"nats-99","proxmox":{"cores":2}}`),
					envelope(202, "NodeRemoved", "nats-3", `{"name":"nats-3","reason":"retired"}`),
					envelope(203, "NodeUpdated", "nats-3", `{"name":"nats-3","proxmox":{"cores":2}}`),
					envelope(204, "ServiceConfigured", "nats", `{"kind":"nats","settings":{"client_port":70000}}`),
					envelope(205, "NodeUpdated", "nats-4", `{"name":"nats-4","proxmox":{"vmid":1005}}`))
			},
			refused: true,
		},
		{
			name: "files named out of the events' order",
			setup: func(t *testing.T, dir string) {
				src := t.TempDir()
				history(eventstest.History{Nodes: 5, Events: 40, PerFile: 10})(t, src)
				copyFiles(t, src, dir, func(name string) string {
					var n int
					if _, err := fmt.Sscanf(name, "%06d.ndjson", &n); err != nil {
						t.Fatal(err)
					}
					return fmt.Sprintf("%03d.ndjson", 100-n) // the last events first
				})
			},
			unordered: true,
		},
		{
			name:   "reading stops at the total limit",
			limits: events.Limits{TotalSize: 10 << 10},
			setup:  history(eventstest.History{Nodes: 5, Events: 200, PerFile: 20}),
		},
		{name: "no events", setup: func(t *testing.T, dir string) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tt.setup(t, dir)
			evs, wantProblems := tt.limits.Load(t.Context(), dir)
			want, more := topology.Fold(evs)
			wantProblems = append(wantProblems, more...)
			got, problems := topology.LoadWithin(t.Context(), dir, tt.limits)
			if g, w := problemLines(problems), problemLines(wantProblems); !reflect.DeepEqual(g, w) {
				t.Fatalf("problems differ:\nLoad: %s\nFold: %s", strings.Join(g, "\n      "), strings.Join(w, "\n      "))
			}
			if g, w := topologyJSON(t, got), topologyJSON(t, want); g != w {
				t.Errorf("topologies differ:\nLoad: %s\nFold: %s", g, w)
			}
			if !reflect.DeepEqual(got.Removed, want.Removed) {
				t.Errorf("removed nodes differ:\nLoad: %v\nFold: %v", got.Removed, want.Removed)
			}
			_, err := tt.limits.Stream(t.Context(), dir, func(*events.Event) bool { return true })
			if errors.Is(err, events.ErrUnordered) != tt.unordered {
				t.Errorf("events.Stream returned %v; the test expects ErrUnordered: %t", err, tt.unordered)
			}
			if tt.refused != (len(more) > 0 && len(evs) > 0) {
				t.Errorf("the fold reports %d problems over %d events; the test expects it to refuse the log: %t", len(more), len(evs), tt.refused)
			}
		})
	}
}

// TestFoldBoundsItsProblems: a history broken in every event keeps events.MaxProblems of the fold's
// problems and one that counts the others.
func TestFoldBoundsItsProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := eventstest.History{Nodes: 3, Events: 8}
	if _, err := h.Write(dir); err != nil {
		t.Fatal(err)
	}
	var lines []string
	n := 3 * events.MaxProblems
	for i := range n {
		lines = append(lines, envelope(9+i, "NodeUpdated", "gone", `{"name":"gone","proxmox":{"cores":2}}`))
	}
	appendLines(t, filepath.Join(dir, "000001.ndjson"), lines...)
	_, problems := topology.Load(t.Context(), dir)
	if len(problems) != events.MaxProblems+1 {
		t.Fatalf("%d problems, want %d", len(problems), events.MaxProblems+1)
	}
	if want := fmt.Sprintf("and %d more problems", n-events.MaxProblems); !strings.Contains(problems[events.MaxProblems].Message, want) {
		t.Errorf("last problem %q, want %q", problems[events.MaxProblems].Message, want)
	}
	if p := problems[0]; p.Sequence != 9 || p.Field != "data.name" || !strings.Contains(p.Message, `unknown node "gone"`) {
		t.Errorf("first problem %v", p)
	}
}

func envelope(seq int, typ, aggregate, data string) string {
	return fmt.Sprintf(`{"event_id":"extra-%d","aggregate_id":%q,"sequence":%d,"timestamp":"2025-11-20T10:00:00Z","event_type":%q,"data":%s}`, seq, aggregate, seq, typ, data)
}

func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
}

// copyFiles copies the files of from into to, renamed by rename (nil: the same names).
func copyFiles(t *testing.T, from, to string, rename func(string) string) {
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
		name := e.Name()
		if rename != nil {
			name = rename(name)
		}
		if err := os.WriteFile(filepath.Join(to, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func problemLines(ps events.Problems) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s [cause: %v]", p, p.Err))
	}
	return out
}

func topologyJSON(t *testing.T, top *topology.Topology) string {
	t.Helper()
	data, err := json.Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
