// Package eventstest writes synthetic event logs for tests and benchmarks of the events, the fold and
// the projection. It is imported only by tests.
package eventstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// History is a synthetic log: a domain, Nodes nodes (NodeAdded, then one NetworkTopologyUpdated giving
// them their addresses in 10.0.0.0/16), the nats and exporter services, then changes up to Events
// events in all: NodeUpdated (cores and memory of one node after the other) and ServiceConfigured
// (nats' JetStream memory limit), alternating. The log is the same for the same fields.
type History struct {
	Nodes  int // 1 to 10000 (the network event stays under events.MaxFileSize)
	Events int // at least Nodes+5
	// PerFile is how many events one NDJSON file holds (0: 1000); files are named so that their
	// lexical order is the log's order.
	PerFile int
}

// Setup is how many events build the cluster before the changes start.
func (h History) Setup() int { return h.Nodes + 5 }

// Write writes the log's NDJSON files into dir and returns their total size in bytes.
func (h History) Write(dir string) (int64, error) {
	if h.Nodes < 1 || h.Nodes > 10000 || h.Events < h.Setup() {
		return 0, fmt.Errorf("history of %d events over %d nodes: needs 1 to 10000 nodes and at least %d events", h.Events, h.Nodes, h.Setup())
	}
	per := h.PerFile
	if per <= 0 {
		per = 1000
	}
	var buf bytes.Buffer
	var total int64
	file := 0
	flush := func() error {
		if buf.Len() == 0 {
			return nil
		}
		file++
		total += int64(buf.Len())
		err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%06d.ndjson", file)), buf.Bytes(), 0o644)
		buf.Reset()
		return err
	}
	seq := 0
	emit := func(typ, aggregate string, data any) error {
		seq++
		d, err := json.Marshal(data)
		if err != nil {
			return err
		}
		fmt.Fprintf(&buf, `{"event_id":"ev-%d","aggregate_id":%q,"sequence":%d,"timestamp":"2025-11-20T10:00:00Z","correlation_id":"c-%d","causation_id":"c-%d","event_type":%q,"data":%s}`+"\n",
			seq, aggregate, seq, seq/10, seq/10, typ, d)
		if seq%per == 0 {
			return flush()
		}
		return nil
	}
	type obj = map[string]any
	if err := emit("DomainCreated", "bench", obj{"name": "bench", "purpose": "benchmark", "administrator": "ops@bench", "services": []string{"nats-jetstream"}}); err != nil {
		return 0, err
	}
	name := func(i int) string { return fmt.Sprintf("nats-%d", i) }
	nodes := make([]any, 0, h.Nodes)
	for i := 1; i <= h.Nodes; i++ {
		err := emit("NodeAdded", name(i), obj{"name": name(i), "system": "x86_64-linux", "state_version": "25.05",
			"proxmox": obj{"host": "pve1", "vmid": 1000 + i, "cores": 2, "memory_mib": 2048, "storage": "local-lvm", "bridge": "vmbr0"}})
		if err != nil {
			return 0, err
		}
		nodes = append(nodes, obj{"name": name(i), "interfaces": []any{obj{"name": "eth0",
			"addresses": []any{obj{"address": fmt.Sprintf("10.0.%d.%d", 1+i/250, 1+i%250), "prefix_length": 16}}}}})
	}
	steps := []struct {
		typ, aggregate string
		data           any
	}{
		{"NetworkTopologyUpdated", "bench-lan", obj{"topology_id": "bench-lan", "network": obj{"cidr": "10.0.0.0/16", "gateway": "10.0.0.1", "dns": []string{"10.0.0.1"}}, "nodes": nodes}},
		{"ServiceAdded", "nats", obj{"kind": "nats", "settings": obj{"cluster": obj{"name": "bench"}}}},
		{"ServiceAdded", "prometheus-node-exporter", obj{"kind": "prometheus-node-exporter"}},
		{"ServiceAdded", "prometheus-nats-exporter", obj{"kind": "prometheus-nats-exporter"}},
	}
	for _, s := range steps {
		if err := emit(s.typ, s.aggregate, s.data); err != nil {
			return 0, err
		}
	}
	for c := 0; seq < h.Events; c++ {
		var err error
		if c%2 == 0 {
			i := 1 + (c/2)%h.Nodes
			err = emit("NodeUpdated", name(i), obj{"name": name(i), "proxmox": obj{"cores": 1 + c%8, "memory_mib": 1024 * (1 + c%4)}})
		} else {
			err = emit("ServiceConfigured", "nats", obj{"kind": "nats", "settings": obj{"jetstream": obj{"max_memory_store": 1 << 20 * (1 + c%64)}}})
		}
		if err != nil {
			return 0, err
		}
	}
	return total, flush()
}
