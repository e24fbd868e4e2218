package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/rollout"
)

// TestMaxParallelOutOfRangeIsAUsageError: --max-parallel (and its variable) outside 1..256 is refused
// before anything runs, naming the flag.
func TestMaxParallelOutOfRangeIsAUsageError(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"rollout", "--repo", ".", "--all", "--yes", "--data-dir", t.TempDir(), "--max-parallel", "0"},
		{"run", "--repo", ".", "--data-dir", t.TempDir(), "--max-parallel", "257"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(stderr, "--max-parallel") || !strings.Contains(stderr, "CIMDEPLOY_ROLLOUT_MAX_PARALLEL") {
			t.Errorf("%v: exit %d, want %d naming --max-parallel:\n%s", args, code, exitUsage, stderr)
		}
	}
	if code, _, stderr := runCLI(t, "rollout", "--repo", ".", "--all", "--yes", "--max-parallel", "many"); code != exitUsage {
		t.Errorf("--max-parallel many: exit %d, want %d\n%s", code, exitUsage, stderr)
	}
}

// TestPrintWavesAndNodeCommits: the plan shows its waves and what waits for what; the result says
// which commit each node runs, and the wall time beside the critical path.
func TestPrintWavesAndNodeCommits(t *testing.T) {
	t.Parallel()
	plan := &rollout.Plan{MaxParallel: 4,
		Groups: []rollout.Group{{Name: "cluster east"}, {Name: "cluster west"}, {Name: "leaves of east", After: []string{"cluster east"}}},
		Waves: []rollout.Wave{
			{Number: 1, Steps: []rollout.WaveStep{{Group: "cluster east", Nodes: []string{"east-2"}}, {Group: "cluster west", Nodes: []string{"west-1"}}}},
			{Number: 2, Steps: []rollout.WaveStep{{Group: "cluster east", Nodes: []string{"east-1"}}}},
			{Number: 3, Steps: []rollout.WaveStep{{Group: "leaves of east", Nodes: []string{"leaf-1", "leaf-2"}}}},
		}}
	var out bytes.Buffer
	printWaves(&out, plan)
	for _, want := range []string{"3 group(s), at most 4 node(s) at once; leaves of east after cluster east",
		"1  cluster east: east-2  |  cluster west: west-1", "3  leaves of east: leaf-1 leaf-2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("waves do not say %q:\n%s", want, out.String())
		}
	}
	res := &rollout.Result{RunID: "r1", Status: rollout.StatusFailed, Duration: 1100 * time.Millisecond, CriticalPath: time.Second,
		Nodes: []rollout.NodeResult{
			{Node: "east-2", Group: "cluster east", Status: rollout.StatusFailed, RolledBack: true, Commit: "aaaaaaaaaaaaaaaa"},
			{Node: "west-1", Group: "cluster west", Status: rollout.StatusSuccess, Commit: "bbbbbbbbbbbbbbbb"},
			{Node: "leaf-1", Group: "leaves of east", Status: rollout.StatusSkipped, Commit: "aaaaaaaaaaaaaaaa"},
		},
		Groups: []rollout.GroupResult{{Name: "leaves of east", Status: rollout.StatusSkipped, Why: "not started: hub cluster east failed"}}}
	out.Reset()
	printNodeCommits(&out, res)
	for _, want := range []string{"rollout r1 failed in 1.1s, critical path 1s (1.10x)", "east-2  cluster east", "failed, rolled back  aaaaaaaaaaaa",
		"west-1  cluster west", "bbbbbbbbbbbb", "leaves of east skipped: not started: hub cluster east failed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary does not say %q:\n%s", want, out.String())
		}
	}
}

// TestLineTrackerFromSeveralGroupsAtOnce: the groups of a plan report their nodes side by side; the
// line tracker keeps every line whole (go test -race checks its locking).
func TestLineTrackerFromSeveralGroupsAtOnce(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	tr := &lineTracker{w: &out}
	var wg sync.WaitGroup
	for i := range 8 {
		node := fmt.Sprintf("node-%d", i)
		wg.Go(func() {
			_ = tr.Step(t.Context(), node, func(ctx context.Context, st rollout.Step) error {
				st.Progress(ctx, 1, 2, "activate")
				fmt.Fprintln(st.Output(), "activating the configuration...")
				st.Note("generation %d", 2)
				return nil
			})
			tr.Skip([]string{node + "-leaf"}, rollout.StatusSkipped, "not started: hub cluster east failed")
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 8*5 {
		t.Fatalf("%d lines, want 40:\n%s", len(lines), out.String())
	}
	for i := range 8 {
		for _, want := range []string{fmt.Sprintf("node-%d started", i), fmt.Sprintf("node-%d | activating the configuration...", i),
			fmt.Sprintf("node-%d-leaf skipped: not started: hub cluster east failed", i)} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("no line says %q", want)
			}
		}
	}
}
