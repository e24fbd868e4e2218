package topology

import (
	"net/netip"
	"sort"
)

// keepRemoved keeps the state of node name, which a NodeRemoved event is taking out, for
// Topology.Removed.
func (f *folder) keepRemoved(name string) {
	if f.removed == nil {
		f.removed = map[string]*nodeState{}
	}
	f.removed[name] = f.nodes[name]
}

// finishRemoved fills Topology.Removed with the nodes removed and not added again, each as it was when
// it was removed (its container and address: what the rollout needs to take it out).
func (f *folder) finishRemoved() {
	names := make([]string, 0, len(f.removed))
	for name := range f.removed {
		if _, gone := f.removedBy[name]; gone {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return
	}
	sort.Strings(names)
	f.t.Removed = map[string]Node{}
	for _, name := range names {
		st := f.removed[name]
		node := Node{System: st.spec.System, StateVersion: st.spec.StateVersion, Proxmox: st.spec.Proxmox}
		if len(st.spec.Interfaces) > 0 && len(st.spec.Interfaces[0].Addresses) > 0 {
			ifc := st.spec.Interfaces[0]
			node.Interface = ifc.Name
			node.Address, _ = netip.ParseAddr(ifc.Addresses[0].Address)
			node.PrefixLength = ifc.Addresses[0].PrefixLength
		}
		f.t.Removed[name] = node
	}
}

// RemovedNames are the names of the removed nodes, sorted.
func (t *Topology) RemovedNames() []string {
	names := make([]string, 0, len(t.Removed))
	for name := range t.Removed {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
