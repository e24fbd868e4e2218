package projection_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// synthetic is an NDJSON event log of a cluster of n nodes in 10.0.0.0/16.
func synthetic(n int) []byte {
	var b bytes.Buffer
	seq := 0
	emit := func(typ string, data map[string]any) {
		seq++
		d, _ := json.Marshal(data)
		var aggregate string // what the event is about
		for _, k := range []string{"topology_id", "kind", "name"} {
			if v, ok := data[k].(string); ok {
				aggregate = v
				break
			}
		}
		fmt.Fprintf(&b, `{"event_id":"ev-%d","aggregate_id":%q,"sequence":%d,"timestamp":"2025-11-20T10:00:00Z","correlation_id":"c","causation_id":"c","event_type":%q,"data":%s}`+"\n", seq, aggregate, seq, typ, d)
	}
	emit("DomainCreated", map[string]any{"name": "bench", "purpose": "benchmark", "administrator": "ops@bench", "services": []string{"nats-jetstream"}})
	var nodes []any
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("nats-%d", i)
		emit("NodeAdded", map[string]any{"name": name, "system": "x86_64-linux", "state_version": "25.05",
			"proxmox": map[string]any{"host": "pve1", "vmid": 1000 + i, "cores": 2, "memory_mib": 2048, "storage": "local-lvm", "bridge": "vmbr0"}})
		nodes = append(nodes, map[string]any{"name": name, "interfaces": []any{map[string]any{"name": "eth0",
			"addresses": []any{map[string]any{"address": fmt.Sprintf("10.0.%d.%d", 1+i/250, 1+i%250), "prefix_length": 16}}}}})
	}
	emit("NetworkTopologyUpdated", map[string]any{"topology_id": "bench-lan", "network": map[string]any{"cidr": "10.0.0.0/16", "gateway": "10.0.0.1", "dns": []string{"10.0.0.1"}}, "nodes": nodes})
	emit("ServiceAdded", map[string]any{"kind": "nats", "settings": map[string]any{"cluster": map[string]any{"name": "bench"}}})
	emit("ServiceAdded", map[string]any{"kind": "prometheus-node-exporter"})
	emit("ServiceAdded", map[string]any{"kind": "prometheus-nats-exporter"})
	return b.Bytes()
}

// project is the whole projection in memory: parse, order, fold, render.
func project(log []byte) ([]projection.File, error) {
	evs, problems := events.Parse("bench.ndjson", log)
	evs, more := events.Order(evs)
	top, fold := topology.Fold(evs)
	if problems = append(append(problems, more...), fold...); len(problems) > 0 {
		return nil, problems
	}
	return projection.Render(top, projection.Options{})
}

func TestSyntheticTopologiesProject(t *testing.T) {
	t.Parallel()
	files, err := project(synthetic(1000))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(files[3].Data, []byte("nats-1000 = {")) {
		t.Fatal("node nats-1000 missing from topology.nix")
	}
}

// BenchmarkProject measures events -> files in memory; ns/node should stay flat as nodes grow.
func BenchmarkProject(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		log := synthetic(n)
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := project(log); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/node")
		})
	}
}
