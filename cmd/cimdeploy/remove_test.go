package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// commitNodeRemoved commits a NodeRemoved event of node to the lab's repository, with the projection
// of the events that follow, and returns the events.
func commitNodeRemoved(t *testing.T, l *lab.Lab, node string) []events.Event {
	t.Helper()
	evs := l.Events()
	last := evs[len(evs)-1]
	seq := last.Sequence + 1
	data, _ := json.Marshal(map[string]string{"name": node, "reason": "decommissioned"})
	ev := events.Event{EventID: fmt.Sprintf("00000000-0000-4000-8000-%012d", seq), AggregateID: node, Sequence: seq,
		Timestamp: last.Timestamp.Add(time.Minute), CorrelationID: last.CorrelationID, CausationID: last.EventID,
		Type: events.NodeRemoved, Data: data, Source: events.Source{File: fmt.Sprintf("%04d-noderemoved.json", seq), Line: 1}}
	evs = append(evs, ev)
	raw, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.RepoDir(), "events", ev.Source.File), append(raw, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	top, problems := topology.Fold(evs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	files, err := projection.Render(top, projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := projection.Write(l.RepoDir(), files); err != nil {
		t.Fatal(err)
	}
	commitRepo(t, l.RepoDir(), "remove "+node)
	return evs
}

// TestRolloutRemovesANodeOnLab: after a deploy, a commit removes nats-3. The plan of `rollout --all`
// switches nats-1 and nats-2 (routes without nats-3) and then takes nats-3 out, step by step; a
// rollout of one node leaves the removal for later; --destroy-removed without a terminal needs --yes.
// The lab's NATS has no system account, and $JS.API.SERVER.REMOVE is answered only there: the
// removal is refused before any node is touched, saying so. (The removal itself runs against real
// servers with a system account in rollout's TestNATSRemoveServerFromTheMetaGroup.)
func TestRolloutRemovesANodeOnLab(t *testing.T) {
	l := lab.Start(t, lab.Options{Nodes: 3})
	ctx := t.Context()
	if _, err := l.Repo(ctx); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	common := append([]string{"--repo", l.RepoDir(), "--rev", "main", "--proxmox-host", l.PVE().Address().String()}, labFlags(l, data)...)
	if code, stdout, stderr := runCLI(t, append([]string{"run"}, common...)...); code != exitOK {
		t.Fatalf("run = %d\n%s\n%s", code, stdout, stderr)
	}
	if err := l.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	commitNodeRemoved(t, l, "nats-3")
	deployed := map[string]string{}
	for _, n := range l.Nodes() {
		deployed[n.Name()] = n.CurrentSystem()
	}

	code, stdout, stderr := runCLI(t, append([]string{"rollout", "--all", "--dry-run", "--destroy-removed"}, common...)...)
	t.Logf("rollout --all --dry-run --destroy-removed:\n%s", stdout)
	if code != exitOK || !strings.Contains(stderr, "dry run: nothing changed") || strings.Count(stdout, " switch ") != 2 {
		t.Fatalf("dry run = %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"3 of 3 node(s) to change",
		"nats-3: remove (vmid 203, NATS server running):",
		"nothing to destroy: container 203 does not exist", // the lab's nodes are no containers of its pct
		"check that every stream on it has a current copy on another server",
		"stop its NATS server: systemctl stop nats.service",
		`$JS.API.SERVER.REMOVE {"peer":"nats-3"} (system account)`,
		"record it as removed",
		"removing nats-3: taking a server out of the JetStream meta group needs the NATS system account",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the plan lacks %q", want)
		}
	}

	// One node only: nats-2 still routes to nats-3, so the removal waits for a rollout of both.
	code, stdout, _ = runCLI(t, append([]string{"rollout", "--node", "nats-1", "--dry-run"}, common...)...)
	if code != exitOK || !strings.Contains(stdout, "nats-3: removed by the events, left alone: the events removed it, but nats-2 is not part of this rollout") ||
		strings.Contains(stdout, "pre-flight refuses") {
		t.Errorf("rollout --node nats-1 --dry-run = %d\n%s", code, stdout)
	}

	// No terminal to confirm the destruction on: --yes is required.
	if code, _, stderr := runCLI(t, append([]string{"rollout", "--all", "--destroy-removed"}, common...)...); code != exitUsage ||
		!strings.Contains(stderr, "--yes") {
		t.Errorf("rollout --destroy-removed without a terminal or --yes = %d, want %d\n%s", code, exitUsage, stderr)
	}

	code, stdout, stderr = runCLI(t, append([]string{"rollout", "--all", "--yes", "--destroy-removed"}, common...)...)
	if code != exitFailed || !strings.Contains(stdout+stderr, "needs the NATS system account") {
		t.Errorf("rollout without a system account = %d, want %d and why\n%s\n%s", code, exitFailed, stdout, stderr)
	}
	for _, n := range l.Nodes() {
		if n.CurrentSystem() != deployed[n.Name()] {
			t.Errorf("the refused rollout switched %s", n.Name())
		}
	}
	if err := l.WaitReady(ctx, 10*time.Second); err != nil {
		t.Errorf("nats-3 was touched: %v", err)
	}
}
