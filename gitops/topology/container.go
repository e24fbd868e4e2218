package topology

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// MaxRootfsGiB bounds a container's root disk (64 TiB).
const MaxRootfsGiB = 64 << 10

// containerFeatures are the keys pct create --features takes (pve-container src/PVE/LXC/Config.pm,
// $features_desc); any other key fails the create.
var containerFeatures = []string{"force_rw_sys", "fuse", "keyctl", "mknod", "mount", "nesting"}

// checkContainer checks the container settings of a node's event that pct create would reject: a
// root disk size out of range, a feature Proxmox does not know or one given twice.
func (f *folder) checkContainer(ev *events.Event, p Proxmox) bool {
	ok := p.RootfsGiB == 0 || f.check(ev, "data.proxmox.rootfs_gib", checkRange(p.RootfsGiB, 1, MaxRootfsGiB))
	seen := map[string]bool{}
	for i, feat := range p.Features {
		key, _, _ := strings.Cut(feat, "=")
		field := fmt.Sprintf("data.proxmox.features[%d]", i)
		switch {
		case !slices.Contains(containerFeatures, key):
			f.problem(ev, field, "%s is no container feature Proxmox knows (%s)", q(key), strings.Join(containerFeatures, ", "))
			ok = false
		case seen[key]:
			f.problem(ev, field, "feature %s is given twice", q(key))
			ok = false
		}
		seen[key] = true
	}
	return ok
}
