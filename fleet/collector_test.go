package fleet_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cimdeploy/cimdeploy/fleet"
)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestCollectorExportsEachNode observes a real fleet of fake nodes (one switched by hand, one down)
// and checks the series of every node.
func TestCollectorExportsEachNode(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	hand := systemOf("nats-2", commitB)
	w.systems["nats-2"].SetRevision(hand, commitB)
	w.systems["nats-2"].SwitchByHand(hand)
	w.systems["nats-3"].SetUp(false)
	clk := &clock{now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	obs := fleet.ObserveFunc(func(ctx context.Context) (*fleet.Fleet, error) {
		return fleet.Observe(ctx, w.source(nil), fleet.Options{Repo: repo, Now: clk.Now})
	})
	reg := prometheus.NewPedanticRegistry()
	if _, err := fleet.NewCollector(obs, reg, fleet.CollectorOptions{Now: clk.Now}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP cimdeploy_node_at_desired_commit 1 when the node runs the commit of the last successful deploy of the deploy branch.
# TYPE cimdeploy_node_at_desired_commit gauge
cimdeploy_node_at_desired_commit{node="nats-1"} 1
cimdeploy_node_at_desired_commit{node="nats-2"} 0
cimdeploy_node_at_desired_commit{node="nats-3"} 0
# HELP cimdeploy_node_drifted 1 when the node runs another system than cimdeploy last deployed on it (switched by hand).
# TYPE cimdeploy_node_drifted gauge
cimdeploy_node_drifted{node="nats-1"} 0
cimdeploy_node_drifted{node="nats-2"} 1
# HELP cimdeploy_node_generation The NixOS system profile generation the node runs (the newest holding its running system; 0: none does).
# TYPE cimdeploy_node_generation gauge
cimdeploy_node_generation{node="nats-1"} 1
cimdeploy_node_generation{node="nats-2"} 2
# HELP cimdeploy_node_healthy 1 when the node's nats-server passes the rollout's health check: /healthz, routed to every other node, a JetStream meta leader.
# TYPE cimdeploy_node_healthy gauge
cimdeploy_node_healthy{node="nats-1"} 0
cimdeploy_node_healthy{node="nats-2"} 0
cimdeploy_node_healthy{node="nats-3"} 0
# HELP cimdeploy_node_info Always 1: the commit the node's running system came from (empty when unknown) and the system's store path.
# TYPE cimdeploy_node_info gauge
cimdeploy_node_info{commit="` + commitA + `",node="nats-1",toplevel="` + systemOf("nats-1", commitA) + `"} 1
cimdeploy_node_info{commit="` + commitB + `",node="nats-2",toplevel="` + hand + `"} 1
# HELP cimdeploy_node_last_deploy_timestamp_seconds When cimdeploy last recorded a deployment on the node (its node record), as a Unix time.
# TYPE cimdeploy_node_last_deploy_timestamp_seconds gauge
cimdeploy_node_last_deploy_timestamp_seconds{node="nats-1"} 1.7961192e+09
cimdeploy_node_last_deploy_timestamp_seconds{node="nats-2"} 1.7961192e+09
cimdeploy_node_last_deploy_timestamp_seconds{node="nats-3"} 1.7961192e+09
# HELP cimdeploy_node_reachable 1 when the node's running system and generations were read over SSH.
# TYPE cimdeploy_node_reachable gauge
cimdeploy_node_reachable{node="nats-1"} 1
cimdeploy_node_reachable{node="nats-2"} 1
cimdeploy_node_reachable{node="nats-3"} 0
# HELP cimdeploy_fleet_observation_success 1 when the last observation of the fleet succeeded; 0 when the state store or the repository failed it (no node series then).
# TYPE cimdeploy_fleet_observation_success gauge
cimdeploy_fleet_observation_success 1
# HELP cimdeploy_fleet_observation_timestamp_seconds When the fleet was last observed, as a Unix time.
# TYPE cimdeploy_fleet_observation_timestamp_seconds gauge
cimdeploy_fleet_observation_timestamp_seconds 1.7962992e+09
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"cimdeploy_node_at_desired_commit", "cimdeploy_node_drifted", "cimdeploy_node_generation", "cimdeploy_node_healthy",
		"cimdeploy_node_info", "cimdeploy_node_last_deploy_timestamp_seconds", "cimdeploy_node_reachable",
		"cimdeploy_fleet_observation_success", "cimdeploy_fleet_observation_timestamp_seconds"); err != nil {
		t.Error(err)
	}
}

// TestCollectorObservesOnScrapeWithinMaxAge: scrapes within MaxAge share one observation, a failure
// included; a failed observation exports no node series and success 0.
func TestCollectorObservesOnScrapeWithinMaxAge(t *testing.T) {
	t.Parallel()
	clk := &clock{now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	var mu sync.Mutex
	calls, fail := 0, false
	obs := fleet.ObserveFunc(func(ctx context.Context) (*fleet.Fleet, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("observation without a deadline")
		}
		if fail {
			return nil, errors.New("list runs: nats: connection closed")
		}
		return &fleet.Fleet{Nodes: []fleet.Node{{Node: "nats-1", Reachable: true, Healthy: true, AtDesired: true, Generation: 4}}}, nil
	})
	reg := prometheus.NewRegistry()
	if _, err := fleet.NewCollector(obs, reg, fleet.CollectorOptions{MaxAge: 30 * time.Second, Now: clk.Now}); err != nil {
		t.Fatal(err)
	}
	scrape := func() (nodes int, success float64) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			switch mf.GetName() {
			case "cimdeploy_node_healthy":
				nodes = len(mf.GetMetric())
			case "cimdeploy_fleet_observation_success":
				success = mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return nodes, success
	}
	for range 3 {
		if nodes, ok := scrape(); nodes != 1 || ok != 1 {
			t.Fatalf("scrape: %d nodes, success %v", nodes, ok)
		}
		clk.Add(10 * time.Second)
	}
	if calls != 1 {
		t.Errorf("3 scrapes in 30 s observed %d times, want once", calls)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	clk.Add(time.Second) // 31 s after the observation
	if nodes, ok := scrape(); nodes != 0 || ok != 0 {
		t.Errorf("after a failed observation: %d nodes, success %v", nodes, ok)
	}
	if nodes, ok := scrape(); nodes != 0 || ok != 0 || calls != 2 {
		t.Errorf("the failure answers the next scrape too: %d nodes, success %v, %d observations", nodes, ok, calls)
	}
}
