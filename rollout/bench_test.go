package rollout_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// BenchmarkLabRollingDeploy rolls the shared lab's three nodes between two systems (a JetStream
// limit changed back and forth), with the Go API as package rollout's documentation shows it, and
// reports per rollout of three nodes:
//
//	total-ms            the whole rollout: pre-flight, every node, the meta leader last
//	activation-ms/node  switch-to-configuration in its unit (nats-server restarted)
//	rejoin-ms/node      the gate after the activation, until the node is healthy and clustered
//	overhead-ms/node    the rest of a node's switch: guard, copy, dead-man timer, profile, disarm, record
//
// These are the engine's own figures (its Result): activation is timed around the SSH command, rejoin
// is the gate. The overhead measured against an independent observer (the node's own activation and
// its health seen every 5 ms) is BenchmarkZeroLossRollout's and BenchmarkGateLag's in
// fixtures/lab/load (docs/benchmarks/overhead.md).
//
// go test ./rollout -run '^$' -bench LabRollingDeploy -benchtime 4x
func BenchmarkLabRollingDeploy(b *testing.B) {
	l := shared.Get(b)
	ctx := b.Context()
	env := map[string]string{}
	for _, e := range l.Env() {
		env[e.Name] = e.Value
	}
	sshCfg, err := remote.LoadConfig(ctx, envconfig.MapLookuper(env))
	if err != nil {
		b.Fatal(err)
	}
	cfg := labRolloutConfig(l)
	logger := slog.New(slog.DiscardHandler)
	pool, err := remote.NewPool(sshCfg, remote.Options{Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	r, err := rollout.Connect(pool, l.Topology(), sshCfg, cfg, nil, logger)
	if err != nil {
		b.Fatal(err)
	}
	var systems [2]map[string]string
	for i, maxMem := range []int64{100 << 20, 110 << 20} {
		topo := l.Topology()
		topo.Services.NATS.JetStream.MaxMemoryStore = maxMem
		if systems[i], err = l.Build(ctx, topo); err != nil {
			b.Fatal(err)
		}
	}
	defer func() { // back to the lab's own systems
		base, err := l.Build(ctx, l.Topology())
		if err == nil {
			_, _, err = r.Deploy(ctx, rollout.Request{RunID: "bench-restore", Targets: rollout.Targets(base, "base")}, nil)
		}
		if err != nil {
			b.Error(err)
		}
	}()
	var total, activation, rejoin, overhead time.Duration
	nodes := 0
	i := 0
	for b.Loop() {
		target := systems[i%2]
		i++
		_, res, err := r.Deploy(ctx, rollout.Request{RunID: fmt.Sprintf("bench-%d", i), Commit: fmt.Sprint(i % 2),
			Targets: rollout.Targets(target, fmt.Sprint(i%2))}, nil)
		if err != nil || res.Status != rollout.StatusSuccess {
			b.Fatalf("%v %+v", err, res)
		}
		total += res.Duration
		for _, n := range res.Nodes {
			activation += n.Activation
			rejoin += n.Rejoin
			overhead += n.Duration - n.Activation - n.Rejoin
			nodes++
		}
	}
	ms := func(d time.Duration, n int) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	b.ReportMetric(ms(total, i), "total-ms")
	b.ReportMetric(ms(activation, nodes), "activation-ms/node")
	b.ReportMetric(ms(rejoin, nodes), "rejoin-ms/node")
	b.ReportMetric(ms(overhead, nodes), "overhead-ms/node")
	b.ReportMetric(0, "ns/op")
}
