package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
// The real rollout, with the lab's system account user, switches nats-1 and nats-2, stops nats-3's
// server and takes it out of the JetStream meta group ($JS.API.SERVER.REMOVE): the two left are
// healthy, routed to each other only, and their meta group no longer lists nats-3.
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
	t.Logf("rollout --all --yes --destroy-removed: exit %d\n%s%s", code, stdout, stderr)
	if code != exitOK {
		t.Fatalf("rollout removing nats-3 = %d\n%s\n%s", code, stdout, stderr)
	}
	for _, name := range []string{"nats-1", "nats-2"} {
		if l.Node(name).CurrentSystem() == deployed[name] {
			t.Errorf("%s was not switched to routes without nats-3", name)
		}
		var jsz struct {
			Meta struct {
				Leader   string `json:"leader"`
				Replicas []struct {
					Name string `json:"name"`
				} `json:"replicas"`
			} `json:"meta_cluster"`
		}
		var varz struct {
			Remotes int `json:"remotes"`
		}
		getJSON(t, l.Node(name).MonitorURL()+"/jsz", &jsz)
		getJSON(t, l.Node(name).MonitorURL()+"/varz", &varz)
		if varz.Remotes != 1 || jsz.Meta.Leader == "" || jsz.Meta.Leader == "nats-3" {
			t.Errorf("%s: %d remotes, meta leader %q: want routed to the other only, with a leader", name, varz.Remotes, jsz.Meta.Leader)
		}
		if jsz.Meta.Leader == name {
			for _, r := range jsz.Meta.Replicas {
				if r.Name == "nats-3" {
					t.Errorf("the meta group still lists nats-3: %+v", jsz.Meta.Replicas)
				}
			}
		}
	}
	if resp, err := http.Get(l.Node("nats-3").MonitorURL() + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("nats-3's server still answers (%s): it was not stopped", resp.Status)
	}
}

// getJSON decodes the JSON that url answers.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}
