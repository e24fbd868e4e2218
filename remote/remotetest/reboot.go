package remotetest

import (
	"context"
	"fmt"

	"github.com/cimdeploy/cimdeploy/remote"
)

var _ remote.Rebooter = (*Proxmox)(nil)

// OnReboot sets what a restart of hostname's container does inside it (a fake node boots its boot
// default); it runs while the container is down.
func (p *Proxmox) OnReboot(hostname string, boot func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.onReboot == nil {
		p.onReboot = map[string]func(){}
	}
	p.onReboot[hostname] = boot
}

// RebootContainer implements remote.Rebooter like remote.PCT: the container must be hostname's and
// run (pct reboot: "VM <vmid> not running" otherwise); its node goes down, boots (OnReboot) and comes
// up again; with ssh set it waits until ssh answers.
func (p *Proxmox) RebootContainer(ctx context.Context, vmid int, hostname string, ssh remote.Runner) error {
	step := fmt.Sprintf("reboot container %d (%s)", vmid, hostname)
	if err := ctx.Err(); err != nil {
		return &remote.Error{Host: p.name, Step: step, Err: err}
	}
	p.mu.Lock()
	c, err := p.ownedLocked(vmid, hostname)
	switch {
	case err != nil:
	case c == nil:
		err = fmt.Errorf("Configuration file 'nodes/%s/lxc/%d.conf' does not exist", p.name, vmid)
	case !c.running:
		err = fmt.Errorf("VM %d not running", vmid)
	}
	if err != nil {
		p.mu.Unlock()
		return &remote.Error{Host: p.name, Step: step, Err: &remote.ExitError{Code: 255, Stderr: err.Error()}}
	}
	n, boot := p.nodes[hostname], p.onReboot[hostname]
	p.mu.Unlock()
	if n != nil {
		n.SetUp(false)
	}
	if boot != nil {
		boot()
	}
	if n != nil {
		n.SetUp(true)
	}
	return p.waitSSH(ctx, remote.Container{SSH: ssh})
}
