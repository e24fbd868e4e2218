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

// clusterEvents is how many of the fixtures build the cluster (domain, nodes, network, services); the
// validation tables count on it. The later ones (accounts) have tests of their own.
const clusterEvents = 9

func fixtures(t testing.TB) []events.Event {
	t.Helper()
	evs := allFixtures(t)
	return evs[:clusterEvents]
}

func allFixtures(t testing.TB) []events.Event {
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

// add appends an event of type typ with the given data (JSON) as the next in the log. Its aggregate_id
// is what the data names: data.name, data.kind or data.topology_id.
func add(evs []events.Event, typ, data string) []events.Event {
	seq := uint64(len(evs) + 1)
	var ids struct{ Name, Kind, TopologyID string }
	json.Unmarshal([]byte(data), &ids)
	return append(append([]events.Event(nil), evs...), events.Event{
		EventID: fmt.Sprintf("test-%d", seq), AggregateID: ids.Name + ids.Kind + ids.TopologyID, Sequence: seq,
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
	if top.Sequence != clusterEvents || top.Network.CIDR.String() != "10.0.0.0/19" || top.Network.Gateway.String() != "10.0.0.1" {
		t.Errorf("topology = %+v", top)
	}
	n := top.Services.NATS
	if n.Cluster.Name != "cim-cluster" || n.JetStream.MaxFileStore != 10<<30 || n.LameDuckDuration != "30s" {
		t.Errorf("nats = %+v", n)
	}
	if got := fmt.Sprint(top.TCPPorts()); got != "[4222 6222 7422 7777 8222 9100]" {
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
	evs := add(fixtures(t)[:9], "NodeUpdated", `{"name":"nats-2","proxmox":{"cores":4,"memory_mib":4096}}`)
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
	base := fixtures(t)[:9] // the cluster's events; the cases below append after them
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
	setInterface := func(key string, v any) []events.Event {
		return edit(t, base, 5, func(d map[string]any) {
			d["nodes"].([]any)[0].(map[string]any)["interfaces"].([]any)[0].(map[string]any)[key] = v
		})
	}
	setAggregate := func(seq uint64, id string) []events.Event {
		out := append([]events.Event(nil), base...)
		out[seq-1].AggregateID = id
		return out
	}
	setRaw := func(seq uint64, data string) []events.Event {
		out := append([]events.Event(nil), base...)
		out[seq-1].Data = json.RawMessage(data)
		return out
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
			[]string{`0007-service-configured-nats.json:`, `event 7 (`, `data.settings.lame_duck_duration: "20s" is under 30s: nats-server refuses it`}},
		{"bad duration", setNATS("lame_duck_duration", "soon"), []string{`data.settings.lame_duck_duration: "soon" is not a positive duration`}},
		{"store dir not absolute", edit(t, base, 7, func(d map[string]any) {
			d["settings"].(map[string]any)["jetstream"].(map[string]any)["store_dir"] = "var/lib/nats"
		}), []string{"data.settings.jetstream.store_dir:", "is not a clean absolute path"}},
		{"store dir with Nix interpolation", edit(t, base, 7, func(d map[string]any) {
			d["settings"].(map[string]any)["jetstream"].(map[string]any)["store_dir"] = "/var/${builtins.abort}"
		}), []string{"data.settings.jetstream.store_dir:", "is not a clean absolute path"}},
		{"cluster name with a space", setNATS("cluster", map[string]any{"name": "cim cluster", "port": 6222}), []string{`data.settings.cluster.name: "cim cluster" is not a NATS cluster name`}},
		{"domain created twice", add(base, "DomainCreated", `{"name":"cim","purpose":"x","administrator":"y"}`), []string{"the domain \"cim\" was already created by event 1"}},
		{"domain purpose with control characters", edit(t, base, 1, func(d map[string]any) { d["purpose"] = "a\x00b" }), []string{"data.purpose: holds control characters"}},
		{"bad state version", setNode(2, "state_version", "unstable"), []string{`data.state_version: "unstable" is not a NixOS release`}},
		{"bad system", setNode(2, "system", "riscv64-linux"), []string{`data.system: "riscv64-linux" is not one of x86_64-linux, aarch64-linux`}},
		{"bad feature", setProxmox(2, "features", []any{"nesting=1,keyctl=1"}), []string{"data.proxmox.features[0]:"}},
		{"two interfaces", add(base, "NodeUpdated", `{"name":"nats-1","interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.41","prefix_length":19}]},{"name":"eth1","addresses":[]}]}`),
			[]string{"data.interfaces: a node has exactly one interface (its Proxmox net0), got 2"}},
		{"every node removed", add(add(add(base, "NodeRemoved", `{"name":"nats-1"}`), "NodeRemoved", `{"name":"nats-2"}`), "NodeRemoved", `{"name":"nats-3"}`),
			[]string{"no nodes"}},
		// Strict JSON, beyond encoding/json: exact keys, no duplicates at any depth.
		{"key matched case-insensitively by encoding/json", setRaw(8, `{"Kind":"prometheus-node-exporter"}`),
			[]string{`data.Kind: unknown field "Kind" (keys are matched exactly: the field is "kind")`}},
		{"duplicate key", setRaw(8, `{"kind":"prometheus-node-exporter","kind":"nats"}`), []string{`data.kind: duplicate key "kind"`}},
		{"duplicate key nested", setRaw(7, `{"kind":"nats","settings":{"jetstream":{"store_dir":"/a","store_dir":"/b"}}}`),
			[]string{`event 7 (0193a6c4-5e10-7000-8000-000000000007): data.settings.jetstream.store_dir: duplicate key "store_dir"`}},
		{"unknown field in settings", setRaw(7, `{"kind":"nats","settings":{"cluster":{"Name":"x"}}}`), []string{`data.settings.cluster.Name: unknown field "Name"`}},
		// aggregate_id names what the data names.
		{"aggregate of DomainCreated", setAggregate(1, "other"), []string{`event 1 (0193a6c4-5e10-7000-8000-000000000001): aggregate_id: "other" is not the domain the event is about: data.name is "cim"`}},
		{"aggregate of NodeAdded", setAggregate(2, "nats-2"), []string{`event 2 (0193a6c4-5e10-7000-8000-000000000002): aggregate_id: "nats-2" is not the node the event is about: data.name is "nats-1"`}},
		{"aggregate of NetworkTopologyUpdated", setAggregate(5, "cim"), []string{`aggregate_id: "cim" is not the topology the event is about: data.topology_id is "cim-lan"`}},
		{"aggregate of ServiceAdded", setAggregate(6, "cim"), []string{`aggregate_id: "cim" is not the service the event is about: data.kind is "nats"`}},
		{"aggregate of ServiceConfigured", setAggregate(7, "nats-1"), []string{`event 7 `, `aggregate_id: "nats-1" is not the service`}},
		{"aggregate of NodeRemoved", func() []events.Event {
			evs := add(base, "NodeRemoved", `{"name":"nats-3"}`)
			evs[9].AggregateID = "nats-2"
			return evs
		}(), []string{`event 10 (test-10): aggregate_id: "nats-2" is not the node the event is about: data.name is "nats-3"`}},
		{"topology id missing", edit(t, base, 5, func(d map[string]any) { delete(d, "topology_id") }), []string{"data.topology_id: \"\" is not a topology id"}},
		// Every field is checked, used or not.
		{"MAC address of another form", setInterface("mac_address", "bc-24-11-00-00-01"), []string{`data.nodes[0].interfaces[0].mac_address: "bc-24-11-00-00-01" is not a unicast MAC address`}},
		{"MAC address multicast", setInterface("mac_address", "01:00:5e:00:00:01"), []string{`mac_address: "01:00:5e:00:00:01" is not a unicast MAC address`}},
		{"interface type", setInterface("interface_type", "eth ernet"), []string{`data.nodes[0].interfaces[0].interface_type: "eth ernet" is not a type`}},
		{"node type", edit(t, base, 5, func(d map[string]any) { d["nodes"].([]any)[1].(map[string]any)["node_type"] = strings.Repeat("x", 33) }),
			[]string{"data.nodes[1].node_type:", "is not a type"}},
		{"DNS with a zone", setNetwork("dns", []any{"fe80::1%eth0"}), []string{`data.network.dns[0]: "fe80::1%eth0" is not an IP address (without a zone)`}},
		{"DNS unspecified", setNetwork("dns", []any{"10.0.0.1", "0.0.0.0"}), []string{`data.network.dns[1]: 0.0.0.0 cannot be a name server's address`}},
		{"DNS twice", setNetwork("dns", []any{"10.0.0.1", "10.0.0.1"}), []string{`data.network.dns[1]: 10.0.0.1 is listed twice`}},
		{"DNS more than the resolver uses", setNetwork("dns", []any{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}), []string{"data.network.dns: 4 name servers: the resolver uses at most 3"}},
		{"purpose too long", edit(t, base, 1, func(d map[string]any) { d["purpose"] = strings.Repeat("p", topology.MaxPurposeLength+1) }), []string{"data.purpose: is 1025 bytes long, more than 1024"}},
		{"administrator too long", edit(t, base, 1, func(d map[string]any) { d["administrator"] = strings.Repeat("a", 257) }), []string{"data.administrator: is 257 bytes long, more than 256"}},
		{"topology name too long", edit(t, base, 5, func(d map[string]any) { d["name"] = strings.Repeat("n", 65) }), []string{"data.name: is 65 bytes long, more than 64"}},
		{"administrator with a C1 control character", edit(t, base, 1, func(d map[string]any) { d["administrator"] = "ops\u009b@cim" }), []string{"data.administrator: holds control characters"}},
		{"removal reason with control characters", add(base, "NodeRemoved", `{"name":"nats-3","reason":"a\u001bb"}`), []string{"data.reason: holds control characters"}},
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
	evs := edit(t, fixtures(t)[:9], 2, func(d map[string]any) { d["name"] = "NATS-1" })
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

// TestGiantValuesStayShort: a value of hundreds of kilobytes is never echoed whole into a problem; the
// problem keeps its start and says how long it was.
func TestGiantValuesStayShort(t *testing.T) {
	t.Parallel()
	base := fixtures(t)
	giant := strings.Repeat("a", 700<<10)
	setRaw := func(seq uint64, data string) []events.Event {
		out := append([]events.Event(nil), base...)
		out[seq-1].Data = json.RawMessage(data)
		return out
	}
	tests := []struct {
		name string
		evs  []events.Event
		want string
	}{
		{"node name", edit(t, base, 2, func(d map[string]any) { d["name"] = giant }), `data.name: "aaaa`},
		{"unknown node in a topology", edit(t, base, 5, func(d map[string]any) { d["nodes"].([]any)[0].(map[string]any)["name"] = giant }), "data.nodes[0].name: unknown node"},
		{"unknown key", setRaw(8, `{"kind":"prometheus-node-exporter","`+giant+`":1}`), `unknown field "aaaa`},
		{"duration of leading zeros", edit(t, base, 7, func(d map[string]any) {
			d["settings"].(map[string]any)["lame_duck_duration"] = strings.Repeat("0", 700<<10) + "1s"
		}), "data.settings.lame_duck_duration:"},
		{"number", setRaw(2, `{"name":"nats-1","proxmox":{"vmid":`+strings.Repeat("9", 700<<10)+`}}`), "data.proxmox.vmid:"},
		{"service kind", setRaw(8, `{"kind":"`+giant+`"}`), "data.kind: unknown service kind"},
		{"aggregate id", func() []events.Event {
			out := append([]events.Event(nil), base...)
			out[0].AggregateID = giant
			return out
		}(), "aggregate_id:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, problems := topology.Fold(tt.evs)
			got := problems.Error()
			if !strings.Contains(got, tt.want) {
				t.Errorf("problems do not mention %q:\n%.2000s", tt.want, got)
			}
			for _, p := range problems {
				if s := p.String(); len(s) > 600 {
					t.Errorf("a problem of %d bytes: %.600s…", len(s), s)
				}
			}
		})
	}
}
