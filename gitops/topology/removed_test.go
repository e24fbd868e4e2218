package topology_test

import (
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

func TestRemovedNodesKeepTheirContainerAndAddress(t *testing.T) {
	t.Parallel()
	evs := add(fixtures(t), "NodeRemoved", `{"name":"nats-3","reason":"decommissioned"}`)
	top, problems := topology.Fold(evs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if got := strings.Join(top.RemovedNames(), ","); got != "nats-3" {
		t.Fatalf("removed %q, want nats-3", got)
	}
	n3 := top.Removed["nats-3"]
	if n3.Proxmox.VMID == 0 || !n3.Address.IsValid() || n3.Interface == "" {
		t.Errorf("removed nats-3 = %+v: want its VMID, address and interface", n3)
	}
	if _, ok := top.Nodes["nats-3"]; ok {
		t.Error("nats-3 is still a node")
	}

	// Added back: no longer removed.
	evs = add(evs, "NodeAdded", `{"name":"nats-3","system":"x86_64-linux","state_version":"25.11",
		"proxmox":{"host":"pve1","vmid":213,"cores":2,"memory_mib":2048,"storage":"local-lvm","bridge":"vmbr0"},
		"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.53","prefix_length":19}]}]}`)
	top, problems = topology.Fold(evs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if len(top.Removed) != 0 {
		t.Errorf("removed %v after NodeAdded brought nats-3 back", top.RemovedNames())
	}
}
