package remote

import (
	"context"
	"fmt"
	"strconv"
)

// Lifecycle is a Proxmox host that stops and destroys containers; PCT is one. Both check first that
// vmid is the container of hostname (ErrForeignContainer otherwise), so a VMID reused by another
// container is never touched.
type Lifecycle interface {
	// StopContainer stops container vmid (pct stop) when it runs; a stopped or missing container is
	// left as it is. It returns the state the container had.
	StopContainer(ctx context.Context, vmid int, hostname string) (ContainerState, error)
	// DestroyContainer destroys the stopped container vmid and its volumes (pct destroy VMID
	// --purge 1); a missing container is no error. It refuses a running one.
	DestroyContainer(ctx context.Context, vmid int, hostname string) error
}

var _ Lifecycle = (*PCT)(nil)

// StopContainer implements Lifecycle. pct stop powers the container off at once (pct(1): "Stop the
// container. This will abruptly stop all processes running in the container."); cimdeploy stops a
// removed node's container only after its NATS server left the cluster's routes and meta group work.
func (p *PCT) StopContainer(ctx context.Context, vmid int, hostname string) (ContainerState, error) {
	st, err := p.owned(ctx, vmid, hostname)
	if err == nil && st == ContainerRunning {
		err = p.pct(ctx, "stop", strconv.Itoa(vmid))
	}
	if err != nil {
		return st, wrapErr(p.host.Name(), fmt.Sprintf("stop container %d (%s)", vmid, hostname), err)
	}
	p.log.Info("container stopped", "host", p.host.Name(), "vmid", vmid, "hostname", hostname, "was", st)
	return st, nil
}

// DestroyContainer implements Lifecycle with pct destroy VMID --purge 1: the container, its config and
// every volume it owns go, and --purge also takes it out of backup and replication jobs and HA
// (pve-container src/PVE/API2/LXC.pm, destroy_vm: "Remove container from all related
// configurations"). Without --force, pct refuses a running container; so does this.
func (p *PCT) DestroyContainer(ctx context.Context, vmid int, hostname string) error {
	id := strconv.Itoa(vmid)
	st, err := p.owned(ctx, vmid, hostname)
	switch {
	case err != nil:
	case st == ContainerMissing:
		return nil
	case st == ContainerRunning:
		err = fmt.Errorf("container %s is running: stop it first", id)
	default:
		err = p.host.Run(ctx, Cmd{Argv: []string{"pct", "destroy", id, "--purge", "1"}, Step: "pct destroy " + id})
	}
	if err != nil {
		return wrapErr(p.host.Name(), fmt.Sprintf("destroy container %d (%s)", vmid, hostname), err)
	}
	p.log.Warn("container destroyed", "host", p.host.Name(), "vmid", vmid, "hostname", hostname)
	return nil
}

// owned is the state of container vmid after checking that it is hostname's.
func (p *PCT) owned(ctx context.Context, vmid int, hostname string) (ContainerState, error) {
	st, err := p.status(ctx, vmid)
	if err != nil || st == ContainerMissing {
		return st, err
	}
	conf, err := p.config(ctx, vmid)
	if err != nil {
		return st, err
	}
	if h := conf["hostname"]; h != hostname {
		return st, fmt.Errorf("%w: container %d is %q, not %q; refusing to touch it", ErrForeignContainer, vmid, h, hostname)
	}
	return st, nil
}
