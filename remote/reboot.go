package remote

import (
	"context"
	"fmt"
	"strconv"
)

// Rebooter is a Proxmox host that restarts containers; PCT is one. Like Lifecycle it checks first
// that vmid is the container of hostname (ErrForeignContainer otherwise).
type Rebooter interface {
	// RebootContainer restarts the running container vmid (pct reboot: a clean shutdown, then a
	// start) and, with ssh set, waits until its SSH answers again (up to the boot timeout). A
	// container that is not running is an error: pct reboot refuses it.
	RebootContainer(ctx context.Context, vmid int, hostname string, ssh Runner) error
}

var _ Rebooter = (*PCT)(nil)

// RebootContainer implements Rebooter with pct reboot VMID. pct(1): "Reboot the container by shutting
// it down, and starting it again. Applies pending changes." (pve-container src/PVE/API2/LXC.pm,
// vm_reboot, which dies with "VM <vmid> not running" for a container that is not running.) Its
// --timeout ("Wait maximal timeout seconds for the shutdown") is left to Proxmox's default.
func (p *PCT) RebootContainer(ctx context.Context, vmid int, hostname string, ssh Runner) error {
	id := strconv.Itoa(vmid)
	st, err := p.owned(ctx, vmid, hostname)
	switch {
	case err != nil:
	case st != ContainerRunning:
		err = fmt.Errorf("container %s is %s: pct reboot restarts only a running container", id, st)
	default:
		err = p.pct(ctx, "reboot", id)
	}
	if err == nil {
		err = p.waitSSH(ctx, Container{SSH: ssh})
	}
	if err != nil {
		return wrapErr(p.host.Name(), fmt.Sprintf("reboot container %d (%s)", vmid, hostname), err)
	}
	p.log.Info("container rebooted", "host", p.host.Name(), "vmid", vmid, "hostname", hostname)
	return nil
}
