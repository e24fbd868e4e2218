package topology

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// Service kinds that ServiceAdded and ServiceConfigured name.
const (
	KindNATS         = "nats"
	KindNodeExporter = "prometheus-node-exporter"
	KindNATSExporter = "prometheus-nats-exporter"
)

// DefaultNATSExporterFlags are the collectors enabled when a NATS exporter names none: without flags the
// exporter exports nothing.
var DefaultNATSExporterFlags = []string{"-varz", "-connz", "-routez", "-jsz=all", "-healthz"}

// Event payloads, decoded strictly: an unknown field is a problem.
type (
	domainCreated struct {
		Name          string   `json:"name"`
		Purpose       string   `json:"purpose"`
		Administrator string   `json:"administrator"`
		Services      []string `json:"services"`
	}
	networkTopologyUpdated struct {
		TopologyID string         `json:"topology_id"`
		Name       string         `json:"name"`
		Network    *networkSpec   `json:"network"`
		Nodes      []topologyNode `json:"nodes"`
	}
	networkSpec struct {
		CIDR    string   `json:"cidr"`
		Gateway string   `json:"gateway"`
		DNS     []string `json:"dns"`
	}
	topologyNode struct {
		Name       string          `json:"name"`
		NodeType   string          `json:"node_type"`
		Interfaces []interfaceSpec `json:"interfaces"`
	}
	interfaceSpec struct {
		Name          string        `json:"name"`
		InterfaceType string        `json:"interface_type"`
		MACAddress    string        `json:"mac_address,omitempty"`
		Addresses     []addressSpec `json:"addresses"`
	}
	addressSpec struct {
		Address      string `json:"address"`
		PrefixLength int    `json:"prefix_length"`
	}
	// nodeSpec is NodeAdded's payload; NodeUpdated overlays the fields it has onto it.
	nodeSpec struct {
		Name         string          `json:"name"`
		System       string          `json:"system"`
		StateVersion string          `json:"state_version"`
		Proxmox      Proxmox         `json:"proxmox"`
		Interfaces   []interfaceSpec `json:"interfaces,omitempty"`
		// Role and Cluster: roles.go.
		Role    string `json:"role,omitempty"`
		Cluster string `json:"cluster,omitempty"`
	}
	nodeRemoved struct {
		Name   string `json:"name"`
		Reason string `json:"reason"`
	}
	serviceEvent struct {
		Kind     string          `json:"kind"`
		Settings json.RawMessage `json:"settings"`
	}
)

// nodeState is a node during the fold, with the events that last set its parts (for locating problems).
type nodeState struct {
	spec      nodeSpec
	specBy    *events.Event
	addressBy *events.Event
}

type folder struct {
	t         *Topology
	problems  events.Problems
	nodes     map[string]*nodeState
	removedBy map[string]*events.Event
	removed   map[string]*nodeState // the last state of each removed node (removed.go)
	domainBy  *events.Event
	networkBy *events.Event
	serviceBy map[string]*events.Event
	acc       accountFolder
	operators operatorState
}

// Fold applies events, in the order given (events.Load sorts them by sequence), and validates the
// result. It returns the topology and every problem found (the first events.MaxProblems, then one
// that counts the others); the topology is meaningful only when there are none.
func Fold(evs []events.Event) (*Topology, events.Problems) {
	return FoldSeq(pointers(evs))
}

// FoldSeq is Fold over events that come one at a time (Load streams them from the files): it keeps
// what the topology needs, not the events (each kept event is one that last set a part of it), and
// at most events.MaxProblems problems with one that counts the others.
func FoldSeq(evs iter.Seq[*events.Event]) (*Topology, events.Problems) {
	f := &folder{
		t:         &Topology{Nodes: map[string]Node{}},
		nodes:     map[string]*nodeState{},
		removedBy: map[string]*events.Event{},
		serviceBy: map[string]*events.Event{},
	}
	var omitted int
	for ev := range evs {
		f.t.Sequence = max(f.t.Sequence, ev.Sequence)
		f.apply(ev)
		f.trim(&omitted)
	}
	f.finish()
	f.finishRemoved()
	return f.t, f.bounded(omitted)
}

func (f *folder) problem(ev *events.Event, field, format string, args ...any) {
	f.problems = append(f.problems, ev.Problem(field, format, args...))
}

// decode strictly decodes ev's data into v (events.Decode: exact keys, no duplicates, no unknown
// fields), reporting a problem (and false) when it does not fit.
func (f *folder) decode(ev *events.Event, v any) bool {
	return f.decodeAt(ev, "data", ev.Data, v)
}

// decodeAt is decode for the part data of ev's data found at field.
func (f *folder) decodeAt(ev *events.Event, field string, data []byte, v any) bool {
	if err := events.Decode(data, v); err != nil {
		var de *events.DecodeError
		if errors.As(err, &de) {
			if de.Path != "" {
				field += "." + de.Path
			}
			f.problem(ev, field, "%s", de.Message)
		} else {
			f.problem(ev, field, "%s", err)
		}
		return false
	}
	return true
}

// aggregate checks that ev's aggregate_id is the id the data gives its aggregate (what names names).
func (f *folder) aggregate(ev *events.Event, field, id, names string) {
	if ev.AggregateID != id {
		f.problem(ev, "aggregate_id", "%s is not the %s the event is about: %s is %s", q(ev.AggregateID), names, field, q(id))
	}
}

// q quotes a value of the events for a problem message, shortened when long.
func q(s string) string { return events.Excerpt(s) }

func (f *folder) apply(ev *events.Event) {
	switch ev.Type {
	case events.DomainCreated:
		f.domainCreated(ev)
	case events.NetworkTopologyUpdated:
		f.networkTopologyUpdated(ev)
	case events.NodeAdded:
		f.nodeAdded(ev)
	case events.NodeUpdated:
		f.nodeUpdated(ev)
	case events.NodeRemoved:
		f.nodeRemoved(ev)
	case events.ServiceAdded:
		f.serviceAdded(ev)
	case events.ServiceConfigured:
		f.serviceConfigured(ev)
	case events.DomainAccountDefined, events.DomainUserAdded, events.DomainPermissionsSet,
		events.DomainExportDefined, events.DomainImportDefined, events.SystemUserAdded:
		f.applyAccounts(ev)
	case events.ClusterSecured:
		f.clusterSecured(ev)
	case events.OperatorAdded:
		f.operatorAdded(ev)
	case events.RoleDefined:
		f.roleDefined(ev)
	default:
		f.problem(ev, "event_type", "unknown event type %s", q(ev.Type))
	}
}

func (f *folder) domainCreated(ev *events.Event) {
	var d domainCreated
	if !f.decode(ev, &d) {
		return
	}
	f.aggregate(ev, "data.name", d.Name, "domain")
	if by := f.domainCreatedBy(d.Name); by != nil {
		f.problem(ev, "event_type", "the domain %s was already created by event %d at %s", q(d.Name), by.Sequence, by.Source)
		return
	}
	ok := f.check(ev, "data.name", checkLabel(d.Name))
	ok = f.check(ev, "data.purpose", checkText(d.Purpose, MaxPurposeLength)) && ok
	ok = f.check(ev, "data.administrator", checkText(d.Administrator, MaxAdministratorLength)) && ok
	for i, s := range d.Services {
		ok = f.check(ev, fmt.Sprintf("data.services[%d]", i), checkLabel(s)) && ok
	}
	if !ok {
		return
	}
	dom := Domain{Name: d.Name, Purpose: d.Purpose, Administrator: d.Administrator, Services: nonNil(d.Services)}
	if f.domainBy != nil {
		f.addDomain(ev, dom)
		return
	}
	f.domainBy = ev
	f.t.Domain = dom
}

func (f *folder) networkTopologyUpdated(ev *events.Event) {
	var u networkTopologyUpdated
	if !f.decode(ev, &u) {
		return
	}
	if f.check(ev, "data.topology_id", checkMatch(u.TopologyID, topologyID, "a topology id (letters, digits, '.', '_', ':' and '-', at most 128)")) {
		f.aggregate(ev, "data.topology_id", u.TopologyID, "topology")
	}
	if u.Name != "" {
		f.check(ev, "data.name", checkText(u.Name, MaxNameLength))
	}
	for i, tn := range u.Nodes {
		if tn.NodeType != "" {
			f.check(ev, fmt.Sprintf("data.nodes[%d].node_type", i), checkMatch(tn.NodeType, word, "a type such as server (a letter, then letters, digits, '_' and '-', at most 32)"))
		}
	}
	if u.Network != nil {
		if n, ok := f.network(ev, u.Network); ok {
			f.t.Network = n
			f.networkBy = ev
		}
	}
	for i, tn := range u.Nodes {
		field := fmt.Sprintf("data.nodes[%d]", i)
		st, ok := f.nodes[tn.Name]
		if !ok {
			f.problem(ev, field+".name", "%s", f.unknownNode(tn.Name))
			continue
		}
		if !f.checkInterfaces(ev, field+".interfaces", tn.Interfaces) {
			continue
		}
		st.spec.Interfaces = tn.Interfaces
		st.addressBy = ev
	}
}

func (f *folder) network(ev *events.Event, n *networkSpec) (Network, bool) {
	var out Network
	prefix, err := netip.ParsePrefix(n.CIDR)
	switch {
	case err != nil:
		f.problem(ev, "data.network.cidr", "%s is not a CIDR prefix such as 10.0.0.0/19", q(n.CIDR))
		return out, false
	case prefix != prefix.Masked():
		f.problem(ev, "data.network.cidr", "%s has host bits set; the network is %s", prefix, prefix.Masked())
		return out, false
	case !prefix.Addr().Is4():
		f.problem(ev, "data.network.cidr", "%s: only IPv4 networks are supported", prefix)
		return out, false
	}
	out.CIDR = prefix
	gw, err := netip.ParseAddr(n.Gateway)
	if err != nil {
		f.problem(ev, "data.network.gateway", "%s is not an IP address", q(n.Gateway))
		return out, false
	}
	out.Gateway = gw
	if len(n.DNS) > MaxDNS {
		// resolv.conf(5): "Up to MAXNS (currently 3, see <resolv.h>) name servers may be listed"; the
		// resolver ignores the others.
		f.problem(ev, "data.network.dns", "%d name servers: the resolver uses at most %d (MAXNS, resolv.conf(5))", len(n.DNS), MaxDNS)
		return out, false
	}
	for i, s := range n.DNS {
		field := fmt.Sprintf("data.network.dns[%d]", i)
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil || a.Zone() != "":
			f.problem(ev, field, "%s is not an IP address (without a zone)", q(s))
			return out, false
		case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			f.problem(ev, field, "%s cannot be a name server's address (unspecified, multicast or broadcast)", a)
			return out, false
		case slices.Contains(out.DNS, a):
			f.problem(ev, field, "%s is listed twice", a)
			return out, false
		}
		out.DNS = append(out.DNS, a)
	}
	if out.DNS == nil {
		out.DNS = []netip.Addr{}
	}
	return out, true
}

func (f *folder) checkInterfaces(ev *events.Event, field string, ifs []interfaceSpec) bool {
	if len(ifs) != 1 {
		f.problem(ev, field, "a node has exactly one interface (its Proxmox net0), got %d", len(ifs))
		return false
	}
	ok := f.check(ev, field+"[0].name", checkInterfaceName(ifs[0].Name))
	if t := ifs[0].InterfaceType; t != "" {
		ok = f.check(ev, field+"[0].interface_type", checkMatch(t, word, "a type such as ethernet (a letter, then letters, digits, '_' and '-', at most 32)")) && ok
	}
	if m := ifs[0].MACAddress; m != "" {
		ok = f.check(ev, field+"[0].mac_address", checkMatch(m, macAddress, "a unicast MAC address such as bc:24:11:00:00:01 (the form Proxmox takes for net0's hwaddr)")) && ok
	}
	addrs := ifs[0].Addresses
	if len(addrs) != 1 {
		f.problem(ev, field+"[0].addresses", "an interface has exactly one IPv4 address, got %d", len(addrs))
		return false
	}
	a, err := netip.ParseAddr(addrs[0].Address)
	if err != nil || !a.Is4() {
		f.problem(ev, field+"[0].addresses[0].address", "%s is not an IPv4 address", q(addrs[0].Address))
		ok = false
	}
	if pl := addrs[0].PrefixLength; pl < 1 || pl > 32 {
		f.problem(ev, field+"[0].addresses[0].prefix_length", "%d is not between 1 and 32", pl)
		ok = false
	}
	return ok
}

func (f *folder) nodeAdded(ev *events.Event) {
	spec := nodeSpec{Proxmox: Proxmox{Unprivileged: true}}
	if !f.decode(ev, &spec) {
		return
	}
	if !f.check(ev, "data.name", checkLabel(spec.Name)) {
		return
	}
	f.aggregate(ev, "data.name", spec.Name, "node")
	if st, ok := f.nodes[spec.Name]; ok {
		f.problem(ev, "data.name", "duplicate node %s, already added by event %d at %s", q(spec.Name), st.specBy.Sequence, st.specBy.Source)
		return
	}
	if !f.checkNode(ev, &spec) {
		return
	}
	st := &nodeState{spec: spec, specBy: ev}
	if len(spec.Interfaces) > 0 {
		st.addressBy = ev
	}
	f.nodes[spec.Name] = st
	delete(f.removedBy, spec.Name)
}

func (f *folder) nodeUpdated(ev *events.Event) {
	var ref nodeSpec
	if !f.decode(ev, &ref) {
		return
	}
	f.aggregate(ev, "data.name", ref.Name, "node")
	st, ok := f.nodes[ref.Name]
	if !ok {
		f.problem(ev, "data.name", "%s", f.unknownNode(ref.Name))
		return
	}
	spec := st.spec
	spec.Proxmox.Features = append([]string(nil), spec.Proxmox.Features...)
	hadInterfaces := len(spec.Interfaces) > 0
	spec.Interfaces = nil
	if !f.decode(ev, &spec) {
		return
	}
	newInterfaces := len(spec.Interfaces) > 0
	if !newInterfaces && hadInterfaces {
		spec.Interfaces = st.spec.Interfaces
	}
	if !f.checkNode(ev, &spec) {
		return
	}
	st.spec = spec
	st.specBy = ev
	if newInterfaces {
		st.addressBy = ev
	}
}

func (f *folder) nodeRemoved(ev *events.Event) {
	var r nodeRemoved
	if !f.decode(ev, &r) {
		return
	}
	f.aggregate(ev, "data.name", r.Name, "node")
	if r.Reason != "" && !f.check(ev, "data.reason", checkText(r.Reason, MaxReasonLength)) {
		return
	}
	if _, ok := f.nodes[r.Name]; !ok {
		f.problem(ev, "data.name", "%s", f.unknownNode(r.Name))
		return
	}
	f.keepRemoved(r.Name)
	delete(f.nodes, r.Name)
	f.removedBy[r.Name] = ev
}

func (f *folder) unknownNode(name string) string {
	if by, ok := f.removedBy[name]; ok {
		return fmt.Sprintf("node %s was already removed by event %d at %s", q(name), by.Sequence, by.Source)
	}
	return fmt.Sprintf("unknown node %s (no NodeAdded event adds it before this one)", q(name))
}

// checkNode validates what a node's own event says.
func (f *folder) checkNode(ev *events.Event, s *nodeSpec) bool {
	ok := f.check(ev, "data.system", checkOneOf(s.System, "x86_64-linux", "aarch64-linux"))
	ok = f.check(ev, "data.state_version", checkMatch(s.StateVersion, stateVersion, "a NixOS release such as 25.05")) && ok
	p := s.Proxmox
	ok = f.check(ev, "data.proxmox.host", checkLabel(p.Host)) && ok
	ok = f.check(ev, "data.proxmox.vmid", checkRange(p.VMID, 100, 999999999)) && ok
	ok = f.check(ev, "data.proxmox.cores", checkRange(p.Cores, 1, 8192)) && ok
	ok = f.check(ev, "data.proxmox.memory_mib", checkRange(p.MemoryMiB, 16, 1<<30)) && ok
	ok = f.check(ev, "data.proxmox.storage", checkMatch(p.Storage, storageID, "a Proxmox storage id such as local-lvm")) && ok
	ok = f.check(ev, "data.proxmox.bridge", checkInterfaceName(p.Bridge)) && ok
	for i, feat := range p.Features {
		ok = f.check(ev, fmt.Sprintf("data.proxmox.features[%d]", i), checkMatch(feat, feature, "a container feature such as nesting=1")) && ok
	}
	ok = f.checkContainer(ev, p) && ok
	if s.Proxmox.Features == nil {
		s.Proxmox.Features = []string{}
	}
	if len(s.Interfaces) > 0 {
		ok = f.checkInterfaces(ev, "data.interfaces", s.Interfaces) && ok
	}
	return ok
}

func (f *folder) serviceAdded(ev *events.Event) {
	var s serviceEvent
	if !f.decode(ev, &s) {
		return
	}
	f.aggregate(ev, "data.kind", s.Kind, "service")
	if by, ok := f.serviceBy[s.Kind]; ok {
		f.problem(ev, "data.kind", "service %s was already added by event %d at %s", q(s.Kind), by.Sequence, by.Source)
		return
	}
	svc := f.t.Services
	switch s.Kind {
	case KindNATS:
		svc.NATS = &NATS{
			ClientPort: 4222, MonitorPort: 8222, Cluster: Cluster{Port: 6222}, Leafnodes: Leafnodes{Port: 7422},
			JetStream:        JetStream{StoreDir: "/var/lib/nats/jetstream"},
			LameDuckDuration: "2m", LameDuckGracePeriod: "10s",
		}
	case KindNodeExporter:
		svc.NodeExporter = &NodeExporter{Port: 9100, EnabledCollectors: []string{}}
	case KindNATSExporter:
		svc.NATSExporter = &NATSExporter{Port: 7777}
	default:
		f.problem(ev, "data.kind", "unknown service kind %s (known: %s, %s, %s)", q(s.Kind), KindNATS, KindNodeExporter, KindNATSExporter)
		return
	}
	if f.configure(ev, &svc, s) {
		f.t.Services = svc
		f.serviceBy[s.Kind] = ev
	}
}

func (f *folder) serviceConfigured(ev *events.Event) {
	var s serviceEvent
	if !f.decode(ev, &s) {
		return
	}
	f.aggregate(ev, "data.kind", s.Kind, "service")
	if _, ok := f.serviceBy[s.Kind]; !ok {
		f.problem(ev, "data.kind", "service %s is not added (no ServiceAdded event adds it before this one)", q(s.Kind))
		return
	}
	svc := f.t.Services.clone()
	if f.configure(ev, &svc, s) {
		f.t.Services = svc
	}
}

// configure overlays the settings of s onto the service of its kind in svc and validates the result.
func (f *folder) configure(ev *events.Event, svc *Services, s serviceEvent) bool {
	var target any
	switch s.Kind {
	case KindNATS:
		target = svc.NATS
	case KindNodeExporter:
		target = svc.NodeExporter
	case KindNATSExporter:
		target = svc.NATSExporter
	}
	if len(bytes.TrimSpace(s.Settings)) > 0 && !f.decodeAt(ev, "data.settings", s.Settings, target) {
		return false
	}
	ok := true
	switch s.Kind {
	case KindNATS:
		n := svc.NATS
		ok = f.check(ev, "data.settings.client_port", checkPort(n.ClientPort))
		ok = f.check(ev, "data.settings.monitor_port", checkPort(n.MonitorPort)) && ok
		ok = f.check(ev, "data.settings.cluster.port", checkPort(n.Cluster.Port)) && ok
		ok = f.check(ev, "data.settings.leafnodes.port", checkPort(n.Leafnodes.Port)) && ok
		ok = f.check(ev, "data.settings.cluster.name", checkMatch(n.Cluster.Name, clusterName, "a NATS cluster name of letters, digits, - and _")) && ok
		ok = f.check(ev, "data.settings.jetstream.store_dir", checkAbsPath(n.JetStream.StoreDir)) && ok
		ok = f.check(ev, "data.settings.jetstream.max_memory_store", checkSize(n.JetStream.MaxMemoryStore)) && ok
		ok = f.check(ev, "data.settings.jetstream.max_file_store", checkSize(n.JetStream.MaxFileStore)) && ok
		ldd, err1 := checkDuration(n.LameDuckDuration)
		if err1 == nil && ldd < minLameDuckDuration {
			// nats-server's own check (server/opts.go): "invalid lame_duck_duration of 20s, minimum is 30 seconds".
			err1 = fmt.Errorf("%s is under %s: nats-server refuses it (invalid lame_duck_duration, minimum is 30 seconds)", q(n.LameDuckDuration), minLameDuckDuration)
		}
		ok = f.check(ev, "data.settings.lame_duck_duration", err1) && ok
		grace, err2 := checkDuration(n.LameDuckGracePeriod)
		ok = f.check(ev, "data.settings.lame_duck_grace_period", err2) && ok
		if err1 == nil && err2 == nil && grace >= ldd {
			f.problem(ev, "data.settings.lame_duck_grace_period", "%s must be shorter than lame_duck_duration %s (nats-server refuses it)", q(n.LameDuckGracePeriod), q(n.LameDuckDuration))
			ok = false
		}
	case KindNodeExporter:
		e := svc.NodeExporter
		ok = f.check(ev, "data.settings.port", checkPort(e.Port))
		for i, c := range e.EnabledCollectors {
			ok = f.check(ev, fmt.Sprintf("data.settings.enabled_collectors[%d]", i), checkMatch(c, collector, "a collector name such as systemd")) && ok
		}
		if e.EnabledCollectors == nil {
			e.EnabledCollectors = []string{}
		}
	case KindNATSExporter:
		e := svc.NATSExporter
		ok = f.check(ev, "data.settings.port", checkPort(e.Port))
		if len(e.ExtraFlags) == 0 {
			e.ExtraFlags = append([]string(nil), DefaultNATSExporterFlags...)
		}
		for i, fl := range e.ExtraFlags {
			ok = f.check(ev, fmt.Sprintf("data.settings.extra_flags[%d]", i), checkMatch(fl, exporterFlag, "a flag such as -jsz=all")) && ok
		}
	}
	return ok
}

func (s Services) clone() Services {
	out := Services{}
	if s.NATS != nil {
		n := *s.NATS
		out.NATS = &n
	}
	if s.NodeExporter != nil {
		e := *s.NodeExporter
		e.EnabledCollectors = append([]string{}, e.EnabledCollectors...)
		out.NodeExporter = &e
	}
	if s.NATSExporter != nil {
		e := *s.NATSExporter
		e.ExtraFlags = append([]string{}, e.ExtraFlags...)
		out.NATSExporter = &e
	}
	return out
}

// finish builds the nodes and checks what only the whole log can tell: every node has an address in
// the network, no two nodes share an address or a VMID, the services' ports don't collide.
func (f *folder) finish() {
	if f.domainBy == nil {
		f.problems = append(f.problems, events.Problem{Message: "no DomainCreated event: the domain is undefined"})
	}
	if f.networkBy == nil {
		f.problems = append(f.problems, events.Problem{Message: "no NetworkTopologyUpdated event defines the network"})
	}
	if f.serviceBy[KindNATS] == nil {
		f.problems = append(f.problems, events.Problem{Message: "no ServiceAdded event adds the nats service"})
	}
	if len(f.nodes) == 0 {
		f.problems = append(f.problems, events.Problem{Message: "no nodes: every node was removed or none was added"})
	}
	f.finishAccounts()

	names := make([]string, 0, len(f.nodes))
	for name := range f.nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	byAddr := map[netip.Addr]string{}
	byVMID := map[int]string{}
	net := f.t.Network
	for _, name := range names {
		st := f.nodes[name]
		node := Node{System: st.spec.System, StateVersion: st.spec.StateVersion, Proxmox: st.spec.Proxmox}
		node.Role, node.Cluster, _ = f.nodeRole(name, st)
		if other, dup := byVMID[node.Proxmox.VMID]; dup {
			f.problem(st.specBy, "data.proxmox.vmid", "node %s has VMID %d, already used by node %s", q(name), node.Proxmox.VMID, q(other))
		}
		byVMID[node.Proxmox.VMID] = name
		if len(st.spec.Interfaces) == 0 {
			f.problem(st.specBy, "data.interfaces", "node %s has no address: no NetworkTopologyUpdated or NodeUpdated event gives it an interface", q(name))
			f.t.Nodes[name] = node
			continue
		}
		ifc := st.spec.Interfaces[0]
		node.Interface = ifc.Name
		node.Address, _ = netip.ParseAddr(ifc.Addresses[0].Address)
		node.PrefixLength = ifc.Addresses[0].PrefixLength
		field := "data.interfaces[0].addresses[0].address"
		if st.addressBy.Type == events.NetworkTopologyUpdated {
			field = fmt.Sprintf("data.nodes[%s].interfaces[0].addresses[0].address", name)
		}
		if other, dup := byAddr[node.Address]; dup {
			f.problem(st.addressBy, field, "node %s has address %s, already used by node %s", q(name), node.Address, q(other))
		}
		byAddr[node.Address] = name
		if net.CIDR.IsValid() {
			switch {
			case !net.CIDR.Contains(node.Address):
				f.problem(st.addressBy, field, "address %s of node %s is outside the network %s", node.Address, q(name), net.CIDR)
			case node.PrefixLength != net.CIDR.Bits():
				f.problem(st.addressBy, strings.TrimSuffix(field, "address")+"prefix_length", "node %s has prefix length %d but the network %s has %d", q(name), node.PrefixLength, net.CIDR, net.CIDR.Bits())
			case node.Address == net.CIDR.Addr() || node.Address == broadcast(net.CIDR):
				f.problem(st.addressBy, field, "address %s of node %s is the network's own or broadcast address", node.Address, q(name))
			case node.Address == net.Gateway:
				f.problem(st.addressBy, field, "address %s of node %s is the gateway's", node.Address, q(name))
			}
		}
		f.t.Nodes[name] = node
	}
	if f.networkBy != nil {
		switch gw := net.Gateway; {
		case !net.CIDR.Contains(gw):
			f.problem(f.networkBy, "data.network.gateway", "gateway %s is outside the network %s", gw, net.CIDR)
		case gw == net.CIDR.Addr() || gw == broadcast(net.CIDR):
			f.problem(f.networkBy, "data.network.gateway", "gateway %s is the network's own or broadcast address", gw)
		}
	}
	f.finishRoles()
	seen := map[int]string{}
	for _, p := range f.t.Services.ports() {
		if other, dup := seen[p.port]; dup {
			f.problem(f.serviceBy[p.kind], "data.settings", "port %d of %s is already used by %s", p.port, p.field, other)
		}
		seen[p.port] = p.field
	}
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// check records err (if any) as a problem of ev's field and reports whether the field is fine.
func (f *folder) check(ev *events.Event, field string, err error) bool {
	if err != nil {
		f.problem(ev, field, "%s", err.Error())
		return false
	}
	return true
}

// minLameDuckDuration is the shortest lame duck duration nats-server accepts.
const minLameDuckDuration = 30 * time.Second

var (
	label        = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	stateVersion = regexp.MustCompile(`^[0-9]{2}\.[0-9]{2}$`)
	storageID    = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9._-]{0,63}$`)
	ifName       = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$`)
	feature      = regexp.MustCompile(`^(nesting|keyctl|fuse|mknod|force_rw_sys)=[01]$|^mount=[a-z0-9;]+$`)
	clusterName  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	collector    = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	exporterFlag = regexp.MustCompile(`^-[a-z][a-z0-9_-]*(=[A-Za-z0-9_.,:/-]+)?$`)
	safePath     = regexp.MustCompile(`^(/[A-Za-z0-9._-]+)+$`)
	topologyID   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	word         = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,31}$`)
	// Proxmox's mac-addr format (pve-common, src/PVE/JSONSchema.pm, pve_verify_mac_addr): six
	// colon-separated octets, the I/G (group) bit clear: "value does not look like a valid unicast MAC
	// address" otherwise.
	macAddress = regexp.MustCompile(`^[a-fA-F0-9][02468aceACE](:[a-fA-F0-9]{2}){5}$`)
)

// Maximum lengths, in bytes, of the free-text fields (docs/events.md).
const (
	MaxPurposeLength       = 1024 // DomainCreated data.purpose
	MaxAdministratorLength = 256  // DomainCreated data.administrator
	MaxNameLength          = 64   // NetworkTopologyUpdated data.name
	MaxReasonLength        = 1024 // NodeRemoved data.reason
	// MaxDNS is the most name servers a network lists: what the resolver uses (MAXNS in <resolv.h>).
	MaxDNS = 3
)

func checkLabel(s string) error {
	if !label.MatchString(s) {
		return fmt.Errorf("%s is not an RFC 1123 label (lower-case letters, digits and '-', 1 to 63 characters, no '-' at either end)", q(s))
	}
	return nil
}

func checkMatch(s string, re *regexp.Regexp, want string) error {
	if !re.MatchString(s) {
		return fmt.Errorf("%s is not %s", q(s), want)
	}
	return nil
}

func checkOneOf(s string, allowed ...string) error {
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	return fmt.Errorf("%s is not one of %s", q(s), strings.Join(allowed, ", "))
}

func checkRange(v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%d is out of range %d..%d", v, lo, hi)
	}
	return nil
}

func checkPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("port %d is out of range 1..65535", p)
	}
	return nil
}

func checkSize(v int64) error {
	if v < 0 {
		return fmt.Errorf("%d must be a number of bytes (0: nats-server's default)", v)
	}
	return nil
}

func checkDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s is not a positive duration such as 30s or 2m", q(s))
	}
	return d, nil
}

func checkAbsPath(s string) error {
	if !safePath.MatchString(s) || path.Clean(s) != s {
		return fmt.Errorf("%s is not a clean absolute path of letters, digits, '.', '_' and '-'", q(s))
	}
	return nil
}

func checkText(s string, maxLen int) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > maxLen:
		return fmt.Errorf("is %d bytes long, more than %d", len(s), maxLen)
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) && r != '\t' }): // C0, DEL and C1
		return errors.New("holds control characters")
	}
	return nil
}

func checkInterfaceName(s string) error {
	if !ifName.MatchString(s) {
		return fmt.Errorf("%s is not an interface name (a letter, then letters, digits, '_', '.', '-'; at most 15)", q(s))
	}
	return nil
}
