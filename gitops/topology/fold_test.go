package topology_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

func fixtures(t testing.TB) []events.Event {
	t.Helper()
	evs, problems := events.Load(t.Context(), "../../fixtures/events")
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	return evs
}

// edit changes the data of the event with sequence seq.
func edit(t testing.TB, evs []events.Event, seq uint64, change func(d map[string]any)) []events.Event {
	t.Helper()
	out := append([]events.Event(nil), evs...)
	for i := range out {
		if out[i].Sequence != seq {
			continue
		}
		var d map[string]any
		if err := json.Unmarshal(out[i].Data, &d); err != nil {
			t.Fatal(err)
		}
		change(d)
		data, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		out[i].Data = data
		return out
	}
	t.Fatalf("no event %d", seq)
	return nil
}

// add appends an event of type typ with the given data (JSON) as the next in the log.
func add(evs []events.Event, typ, data string) []events.Event {
	seq := uint64(len(evs) + 1)
	return append(append([]events.Event(nil), evs...), events.Event{
		EventID: fmt.Sprintf("test-%d", seq), AggregateID: "test", Sequence: seq,
		Timestamp: time.Date(2025, 11, 21, 0, 0, 0, 0, time.UTC), Type: typ, Data: json.RawMessage(data),
		Source: events.Source{File: fmt.Sprintf("test-%d.json", seq), Line: 1},
	})
}

func TestFoldFixtures(t *testing.T) {
	t.Parallel()
	top, problems := topology.Fold(fixtures(t))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if got := strings.Join(top.NodeNames(), ","); got != "nats-1,nats-2,nats-3" {
		t.Errorf("nodes %s", got)
	}
	n2 := top.Nodes["nats-2"]
	if n2.Address.String() != "10.0.0.42" || n2.PrefixLength != 19 || n2.Proxmox.VMID != 202 || n2.Proxmox.MemoryMiB != 2048 {
		t.Errorf("nats-2 = %+v", n2)
	}
	if top.Sequence != 9 || top.Network.CIDR.String() != "10.0.0.0/19" || top.Network.Gateway.String() != "10.0.0.1" {
		t.Errorf("topology = %+v", top)
	}
	n := top.Services.NATS
	if n.Cluster.Name != "cim-cluster" || n.JetStream.MaxFileStore != 10<<30 || n.LameDuckDuration != "30s" {
		t.Errorf("nats = %+v", n)
	}
	if got := fmt.Sprint(top.TCPPorts()); got != "[4222 6222 7777 8222 9100]" {
		t.Errorf("ports %s", got)
	}
}

func TestFoldIsDeterministic(t *testing.T) {
	t.Parallel()
	evs := fixtures(t)
	want, _ := json.Marshal(must(topology.Fold(evs)))
	for i := range 20 {
		shuffled := append([]events.Event(nil), evs...)
		rand.New(rand.NewPCG(uint64(i), 1)).Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		ordered, problems := events.Order(shuffled)
		if len(problems) > 0 {
			t.Fatal(problems)
		}
		got, _ := json.Marshal(must(topology.Fold(ordered)))
		if string(got) != string(want) {
			t.Fatalf("fold of shuffled log differs:\n%s\n%s", got, want)
		}
	}
}

func must(t *topology.Topology, ps events.Problems) *topology.Topology {
	if len(ps) > 0 {
		panic(ps)
	}
	return t
}

func TestNodeLifecycle(t *testing.T) {
	t.Parallel()
	evs := add(fixtures(t), "NodeUpdated", `{"name":"nats-2","proxmox":{"cores":4,"memory_mib":4096}}`)
	evs = add(evs, "NodeRemoved", `{"name":"nats-3","reason":"decommissioned"}`)
	evs = add(evs, "NodeAdded", `{"name":"nats-4","system":"x86_64-linux","state_version":"25.11",
		"proxmox":{"host":"pve1","vmid":204,"cores":2,"memory_mib":2048,"storage":"local-lvm","bridge":"vmbr0"},
		"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.44","prefix_length":19}]}]}`)
	top, problems := topology.Fold(evs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if got := strings.Join(top.NodeNames(), ","); got != "nats-1,nats-2,nats-4" {
		t.Errorf("nodes %s", got)
	}
	n2 := top.Nodes["nats-2"]
	if n2.Proxmox.Cores != 4 || n2.Proxmox.MemoryMiB != 4096 || n2.Proxmox.Storage != "local-lvm" || n2.Address.String() != "10.0.0.42" {
		t.Errorf("NodeUpdated should overlay only what it says: %+v", n2)
	}
	if n4 := top.Nodes["nats-4"]; !n4.Proxmox.Unprivileged || n4.Address.String() != "10.0.0.44" {
		t.Errorf("nats-4 = %+v (containers are unprivileged unless the event says otherwise)", n4)
	}
	if top.Sequence != 12 {
		t.Errorf("sequence %d", top.Sequence)
	}
}

// TestValidation is the table of every validation error the fold reports, each located at its event
// and field.
func TestValidation(t *testing.T) {
	t.Parallel()
	base := fixtures(t)
	setNode := func(seq uint64, key string, v any) []events.Event {
		return edit(t, base, seq, func(d map[string]any) { d[key] = v })
	}
	setProxmox := func(seq uint64, key string, v any) []events.Event {
		return edit(t, base, seq, func(d map[string]any) { d["proxmox"].(map[string]any)[key] = v })
	}
	setAddress := func(node int, addr string, prefix int) []events.Event {
		return edit(t, base, 5, func(d map[string]any) {
			a := d["nodes"].([]any)[node].(map[string]any)["interfaces"].([]any)[0].(map[string]any)["addresses"].([]any)[0].(map[string]any)
			a["address"], a["prefix_length"] = addr, prefix
		})
	}
	setNetwork := func(key string, v any) []events.Event {
		return edit(t, base, 5, func(d map[string]any) { d["network"].(map[string]any)[key] = v })
	}
	setNATS := func(key string, v any) []events.Event {
		return edit(t, base, 6, func(d map[string]any) { d["settings"].(map[string]any)[key] = v })
	}
	tests := []struct {
		name string
		evs  []events.Event
		want []string
	}{
		{"node name not an RFC 1123 label", setNode(2, "name", "Nats_1"),
			[]string{`0002-node-added-nats-1.json:1: event 2 (0193a6c4-5e10-7000-8000-000000000002): data.name: "Nats_1" is not an RFC 1123 label`}},
		{"node name too long", setNode(2, "name", strings.Repeat("a", 64)), []string{"data.name:", "not an RFC 1123 label"}},
		{"node name with a trailing hyphen", setNode(2, "name", "nats-"), []string{"data.name:", "not an RFC 1123 label"}},
		{"duplicate node name", setNode(3, "name", "nats-1"),
			[]string{`event 3 (0193a6c4-5e10-7000-8000-000000000003): data.name: duplicate node "nats-1", already added by event 2 at ../../fixtures/events/0002-node-added-nats-1.json:1`}},
		{"duplicate VMID", setProxmox(3, "vmid", 201), []string{`data.proxmox.vmid: node "nats-2" has VMID 201, already used by node "nats-1"`}},
		{"VMID out of range", setProxmox(2, "vmid", 99), []string{"data.proxmox.vmid: 99 is out of range 100..999999999"}},
		{"duplicate address", setAddress(1, "10.0.0.41", 19), []string{`event 5`, `data.nodes[nats-2].interfaces[0].addresses[0].address: node "nats-2" has address 10.0.0.41, already used by node "nats-1"`}},
		{"address outside the network", setAddress(0, "10.0.32.1", 19), []string{`address 10.0.32.1 of node "nats-1" is outside the network 10.0.0.0/19`}},
		{"address is the broadcast address", setAddress(0, "10.0.31.255", 19), []string{"network's own or broadcast address"}},
		{"address is the gateway", setAddress(0, "10.0.0.1", 19), []string{"is the gateway's"}},
		{"prefix length differs from the network", setAddress(0, "10.0.0.41", 24), []string{`prefix_length: node "nats-1" has prefix length 24 but the network 10.0.0.0/19 has 19`}},
		{"prefix length out of range", setAddress(0, "10.0.0.41", 33), []string{"data.nodes[0].interfaces[0].addresses[0].prefix_length: 33 is not between 1 and 32"}},
		{"address not IPv4", setAddress(0, "fd00::1", 19), []string{`"fd00::1" is not an IPv4 address`}},
		{"gateway outside the network", setNetwork("gateway", "192.168.1.1"), []string{"data.network.gateway: gateway 192.168.1.1 is outside the network 10.0.0.0/19"}},
		{"CIDR with host bits", setNetwork("cidr", "10.0.0.1/19"), []string{"data.network.cidr: 10.0.0.1/19 has host bits set"}},
		{"DNS not an address", setNetwork("dns", []any{"dns.example"}), []string{`data.network.dns[0]: "dns.example" is not an IP address`}},
		{"reference to an unknown node", edit(t, base, 5, func(d map[string]any) {
			d["nodes"].([]any)[0].(map[string]any)["name"] = "nats-9"
		}), []string{`data.nodes[0].name: unknown node "nats-9"`, `node "nats-1" has no address`}},
		{"update of an unknown node", add(base, "NodeUpdated", `{"name":"nats-7","proxmox":{"cores":4}}`), []string{`event 10 (test-10): data.name: unknown node "nats-7"`}},
		{"removing a node twice", add(add(base, "NodeRemoved", `{"name":"nats-3"}`), "NodeRemoved", `{"name":"nats-3"}`),
			[]string{`test-11.json:1: event 11 (test-11): data.name: node "nats-3" was already removed by event 10 at test-10.json:1`}},
		{"port out of range", setNATS("client_port", 70000), []string{"data.settings.client_port: port 70000 is out of range 1..65535"}},
		{"port zero", edit(t, base, 8, func(d map[string]any) { d["settings"].(map[string]any)["port"] = 0 }), []string{"data.settings.port: port 0 is out of range"}},
		{"ports colliding", edit(t, base, 8, func(d map[string]any) { d["settings"].(map[string]any)["port"] = 4222 }),
			[]string{"port 4222 of node_exporter.port is already used by nats.client_port"}},
		{"unknown field in data", setNode(2, "ram", 4), []string{`event 2 (0193a6c4-5e10-7000-8000-000000000002): data.ram: unknown field "ram"`}},
		{"wrong type in data", setProxmox(2, "cores", "two"), []string{"data.proxmox.cores: string where int is expected"}},
		{"unknown service kind", edit(t, base, 8, func(d map[string]any) { d["kind"] = "redis" }), []string{`data.kind: unknown service kind "redis"`}},
		{"configuring a service never added", edit(t, base, 7, func(d map[string]any) { d["kind"] = "prometheus-node-exporter" }),
			[]string{`event 7`, `data.kind: service "prometheus-node-exporter" is not added`}},
		{"service added twice", add(base, "ServiceAdded", `{"kind":"nats"}`), []string{`data.kind: service "nats" was already added by event 6`}},
		{"lame duck grace not shorter", setNATS("lame_duck_grace_period", "5m"), []string{"must be shorter than lame_duck_duration"}},
		{"lame duck duration under nats-server's minimum", setNATS("lame_duck_duration", "20s"),
			[]string{`0007-service-configured-nats.json:`, `event 7 (`, `data.settings.lame_duck_duration: 20s is under 30s: nats-server refuses it`}},
		{"bad duration", setNATS("lame_duck_duration", "soon"), []string{`data.settings.lame_duck_duration: "soon" is not a positive duration`}},
		{"store dir not absolute", edit(t, base, 7, func(d map[string]any) {
			d["settings"].(map[string]any)["jetstream"].(map[string]any)["store_dir"] = "var/lib/nats"
		}), []string{"data.settings.jetstream.store_dir:", "is not a clean absolute path"}},
		{"store dir with Nix interpolation", edit(t, base, 7, func(d map[string]any) {
			d["settings"].(map[string]any)["jetstream"].(map[string]any)["store_dir"] = "/var/${builtins.abort}"
		}), []string{"data.settings.jetstream.store_dir:", "is not a clean absolute path"}},
		{"cluster name with a space", setNATS("cluster", map[string]any{"name": "cim cluster", "port": 6222}), []string{`data.settings.cluster.name: "cim cluster" is not a NATS cluster name`}},
		{"domain created twice", add(base, "DomainCreated", `{"name":"cim","purpose":"x","administrator":"y"}`), []string{"the domain was already created by event 1"}},
		{"domain purpose with control characters", edit(t, base, 1, func(d map[string]any) { d["purpose"] = "a\x00b" }), []string{"data.purpose: holds control characters"}},
		{"bad state version", setNode(2, "state_version", "unstable"), []string{`data.state_version: "unstable" is not a NixOS release`}},
		{"bad system", setNode(2, "system", "riscv64-linux"), []string{`data.system: "riscv64-linux" is not one of x86_64-linux, aarch64-linux`}},
		{"bad feature", setProxmox(2, "features", []any{"nesting=1,keyctl=1"}), []string{"data.proxmox.features[0]:"}},
		{"two interfaces", add(base, "NodeUpdated", `{"name":"nats-1","interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.41","prefix_length":19}]},{"name":"eth1","addresses":[]}]}`),
			[]string{"data.interfaces: a node has exactly one interface (its Proxmox net0), got 2"}},
		{"every node removed", add(add(add(base, "NodeRemoved", `{"name":"nats-1"}`), "NodeRemoved", `{"name":"nats-2"}`), "NodeRemoved", `{"name":"nats-3"}`),
			[]string{"no nodes"}},
		{"no domain, no network, no nats", nil, []string{"no DomainCreated event", "no NetworkTopologyUpdated event", "no ServiceAdded event adds the nats service"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, problems := topology.Fold(tt.evs)
			if len(problems) == 0 {
				t.Fatalf("no problems, want %q", tt.want)
			}
			got := problems.Error()
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("problems do not mention %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestAllProblemsInOneRun(t *testing.T) {
	t.Parallel()
	evs := edit(t, fixtures(t), 2, func(d map[string]any) { d["name"] = "NATS-1" })
	evs = edit(t, evs, 4, func(d map[string]any) { d["proxmox"].(map[string]any)["vmid"] = 202 })
	evs = add(evs, "NodeRemoved", `{"name":"nats-8"}`)
	_, problems := topology.Fold(evs)
	got := problems.Error()
	for _, w := range []string{`event 2 `, `event 4 `, `event 10 `} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in\n%s", w, got)
		}
	}
}
