package rollout_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/rollout"
)

// BenchmarkFakeWaves30 rolls a fake fleet of 30 nodes (three 3-node NATS clusters, 7 leaves on
// each, leaf max_unavailable 4) between two commits, in waves (--max-parallel 12) and one node at a
// time (--max-parallel 1), and reports per rollout:
//
//	wall-ms           the waves' Run (Result.Duration)
//	critical-path-ms  the longest chain of sequential steps (Result.CriticalPath): a cluster's three
//	                  members, then its leaves' two batches, each timed by its activation and rejoin
//	wall/critical     the target: at most 1.2
//	serial-ms         the same rollout one node at a time
//	serial/critical   how much the waves save
//
// Every node's activation takes 60-95 ms and its server rejoins 20-55 ms later (the fake's
// SlowActivations and SlowRejoins, different per node), so that batches wait for their slowest node.
//
// go test ./rollout -run '^$' -bench FakeWaves30 -benchtime 3x
func BenchmarkFakeWaves30(b *testing.B) {
	cfg := fastConfig()
	cfg.GateTimeout, cfg.SettleTimeout = 5*time.Second, 5*time.Second
	w := newFleetWorld(b, fleet{clusters: []string{"east", "north", "west"}, members: 3, leaves: 7, leafMax: 4}, cfg)
	for i, n := range w.top.NodeNames() {
		w.systems[n].SlowActivations(time.Duration(60+i*7%36) * time.Millisecond)
		w.systems[n].SlowRejoins(time.Duration(20+i*11%36) * time.Millisecond)
	}
	var wall, critical, serial time.Duration
	runs := 0
	roll := func(maxParallel int) *rollout.Result {
		runs++
		commit := []string{"b", "a"}[runs%2]
		w.r.Config.MaxParallel = maxParallel
		plan, err := w.r.Plan(b.Context(), rollout.Request{RunID: fmt.Sprintf("bench-%d", runs), Commit: commit, Targets: w.targets(commit)})
		if err != nil {
			b.Fatal(err)
		}
		res := w.r.Run(b.Context(), plan, nil)
		if res.Status != rollout.StatusSuccess || len(res.Nodes) != 30 {
			b.Fatalf("rollout %s: %s (%d nodes)", res.Status, res.Error, len(res.Nodes))
		}
		return res
	}
	n := 0
	for b.Loop() {
		res := roll(12)
		wall += res.Duration
		critical += res.CriticalPath
		serial += roll(1).Duration
		n++
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	b.ReportMetric(ms(wall), "wall-ms")
	b.ReportMetric(ms(critical), "critical-path-ms")
	b.ReportMetric(float64(wall)/float64(critical), "wall/critical")
	b.ReportMetric(ms(serial), "serial-ms")
	b.ReportMetric(float64(serial)/float64(critical), "serial/critical")
	b.ReportMetric(0, "ns/op")
}
