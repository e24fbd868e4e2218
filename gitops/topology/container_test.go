package topology_test

import (
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

func TestContainerSettings(t *testing.T) {
	t.Parallel()
	evs := add(fixtures(t), "NodeUpdated", `{"name":"nats-2","proxmox":{"rootfs_gib":16,"onboot":true,"features":["nesting=1","keyctl=1"]}}`)
	top, problems := topology.Fold(evs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	p := top.Nodes["nats-2"].Proxmox
	if p.RootfsGiB != 16 || !p.OnBoot || strings.Join(p.Features, ",") != "nesting=1,keyctl=1" || p.Cores == 0 {
		t.Errorf("nats-2 proxmox %+v", p)
	}
	if n1 := top.Nodes["nats-1"].Proxmox; n1.RootfsGiB != 0 || n1.OnBoot {
		t.Errorf("nats-1 proxmox %+v: an event that does not say leaves Proxmox's defaults", n1)
	}
	for _, c := range []struct{ data, want string }{
		{`{"name":"nats-2","proxmox":{"rootfs_gib":-1}}`, "data.proxmox.rootfs_gib: -1 is out of range"},
		{`{"name":"nats-2","proxmox":{"features":["nfs=1"]}}`, `data.proxmox.features[0]: "nfs" is no container feature Proxmox knows`},
		{`{"name":"nats-2","proxmox":{"features":["nesting=1","nesting=0"]}}`, `data.proxmox.features[1]: feature "nesting" is given twice`},
		{`{"name":"nats-2","proxmox":{"onboot":"yes"}}`, "data.proxmox.onboot"},
	} {
		_, problems := topology.Fold(add(fixtures(t), "NodeUpdated", c.data))
		if !strings.Contains(problems.Error(), c.want) {
			t.Errorf("%s: problems %v, want %q", c.data, problems, c.want)
		}
	}
}
