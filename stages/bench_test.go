package stages_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/stages"
)

// standInNix is a nix whose every call costs nothing but, optionally, running an external command
// that exits at once (/bin/true) or a fixed delay for builds.
type standInNix struct {
	exec       bool          // run /bin/true per call
	buildDelay time.Duration // each Build takes this long
}

func (n standInNix) call(ctx context.Context) error {
	if n.exec {
		return exec.CommandContext(ctx, "/bin/true").Run()
	}
	return nil
}

func (n standInNix) FlakeCheckCached(ctx context.Context, _ nixrunner.CheckCache, _, _ string, _ func(nixrunner.Progress)) (bool, error) {
	return false, n.call(ctx)
}

func (n standInNix) Build(ctx context.Context, _ string, attrs []string, _ func(nixrunner.Progress)) ([]nixrunner.Built, error) {
	if n.buildDelay > 0 {
		select {
		case <-time.After(n.buildDelay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	built := make([]nixrunner.Built, len(attrs))
	for i, attr := range attrs {
		built[i] = nixrunner.Built{Attr: attr, Outputs: map[string]string{"out": "/nix/store/00000000000000000000000000000000-" + filepath.Base(attr)}}
	}
	return built, n.call(ctx)
}

// workspaceWith writes the projection of a synthetic n-node cluster into a directory: what checkout
// would leave.
func workspaceWith(b *testing.B, n int) string {
	b.Helper()
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "events"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "events", "log.ndjson"), syntheticLog(n), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkOrchestration measures the runner's own cost over generate, check and build with a nix
// that costs nothing. Reported: ms per stage and ms per node on top of it.
func BenchmarkOrchestration(b *testing.B) {
	for _, mode := range []struct {
		name string
		nix  standInNix
	}{{"in-process", standInNix{}}, {"exec-true", standInNix{exec: true}}} {
		for _, n := range []int{3, 100} {
			b.Run(fmt.Sprintf("%s/nodes=%d", mode.name, n), func(b *testing.B) {
				ws := workspaceWith(b, n)
				runner := &pipeline.Runner{Parallel: 2, Stages: []pipeline.Stage{
					stages.Generate{Options: projection.Options{}},
					stages.Check{Nix: mode.nix},
					stages.Build{Nix: mode.nix, Workers: 2},
				}}
				for b.Loop() {
					res, err := runner.Run(b.Context(), &pipeline.Run{ID: "bench", Workspace: ws, Kind: pipeline.KindDeploy, Commit: "c"})
					if err != nil || res.Status != pipeline.StatusSuccess {
						b.Fatalf("%v %+v", err, res)
					}
				}
				perRun := float64(b.Elapsed().Microseconds()) / float64(b.N) / 1000
				b.ReportMetric(perRun/3, "ms/stage")
				b.ReportMetric(perRun/float64(n), "ms/node")
			})
		}
	}
}

// BenchmarkParallelEfficiency: N builds of T each with W workers should take ceil(N/W)·T (within 10%).
// Reported: the ratio of the measured time to that ideal.
func BenchmarkParallelEfficiency(b *testing.B) {
	const t = 50 * time.Millisecond
	for _, c := range []struct{ n, w int }{{12, 4}, {10, 3}, {16, 8}} {
		b.Run(fmt.Sprintf("N=%d/W=%d", c.n, c.w), func(b *testing.B) {
			nodes := make([]string, c.n)
			for i := range nodes {
				nodes[i] = fmt.Sprintf("nats-%d", i+1)
			}
			runner := &pipeline.Runner{Stages: []pipeline.Stage{stages.Build{Nix: standInNix{buildDelay: t}, Workers: c.w}}}
			for b.Loop() {
				res, err := runner.Run(b.Context(), &pipeline.Run{ID: "bench", Workspace: "/nonexistent", Nodes: nodes})
				if err != nil || res.Status != pipeline.StatusSuccess {
					b.Fatalf("%v %+v", err, res)
				}
			}
			ideal := math.Ceil(float64(c.n)/float64(c.w)) * float64(t)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/ideal, "x-ideal")
		})
	}
}

// syntheticLog is an NDJSON event log of an n-node cluster in 10.0.0.0/16.
func syntheticLog(n int) []byte {
	var b []byte
	seq := 0
	emit := func(typ, aggregate, data string) {
		seq++
		b = fmt.Appendf(b, `{"event_id":"ev-%d","aggregate_id":%q,"sequence":%d,"timestamp":"2025-11-20T10:00:00Z","correlation_id":"c","causation_id":"c","event_type":%q,"data":%s}`+"\n", seq, aggregate, seq, typ, data)
	}
	emit("DomainCreated", "bench", `{"name":"bench","purpose":"benchmark","administrator":"ops@bench"}`)
	nodes := ""
	for i := 1; i <= n; i++ {
		emit("NodeAdded", fmt.Sprintf("nats-%d", i), fmt.Sprintf(`{"name":"nats-%d","system":"x86_64-linux","state_version":"25.05","proxmox":{"host":"pve1","vmid":%d,"cores":2,"memory_mib":2048,"storage":"local-lvm","bridge":"vmbr0"}}`, i, 1000+i))
		if i > 1 {
			nodes += ","
		}
		nodes += fmt.Sprintf(`{"name":"nats-%d","interfaces":[{"name":"eth0","addresses":[{"address":"10.0.%d.%d","prefix_length":16}]}]}`, i, 1+i/250, 1+i%250)
	}
	emit("NetworkTopologyUpdated", "bench-lan", `{"topology_id":"bench-lan","network":{"cidr":"10.0.0.0/16","gateway":"10.0.0.1","dns":["10.0.0.1"]},"nodes":[`+nodes+`]}`)
	emit("ServiceAdded", "nats", `{"kind":"nats","settings":{"cluster":{"name":"bench"}}}`)
	return b
}
