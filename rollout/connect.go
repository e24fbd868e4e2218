package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/remote"
)

// Connect is the Rollout of the cluster top over pool (made with remoteCfg, owned by the caller): an
// SSHSystem per node of the topology, the secrets of cfg.SecretsDir (when the cluster is secured), the NATS cluster at the topology's addresses and ports, and pct
// on remoteCfg.ProxmoxHost when it is set. It opens no connection yet.
func Connect(pool *remote.Pool, top *topology.Topology, remoteCfg remote.Config, cfg Config, states States, logger *slog.Logger) (*Rollout, error) {
	r := &Rollout{Topology: top, Systems: map[string]System{}, States: states, Config: cfg, Logger: logger,
		Secrets: NewSecrets(top, cfg.SecretsDir, cfg.SecretsOwner)}
	for _, name := range top.NodeNames() {
		h := remoteCfg.NodeHost(name, top.Nodes[name].Address)
		node, err := pool.Node(h, nil)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", name, err)
		}
		r.Systems[name] = NewSSHSystem(node, remoteCfg, h, cfg.ReconnectTimeout, logger)
	}
	for _, name := range top.RemovedNames() { // to stop their NATS server without a Proxmox host
		if addr := top.Removed[name].Address; addr.IsValid() {
			h := remoteCfg.NodeHost(name, addr)
			node, err := pool.Node(h, nil)
			if err != nil {
				return nil, fmt.Errorf("removed node %s: %w", name, err)
			}
			r.Systems[name] = NewSSHSystem(node, remoteCfg, h, cfg.ReconnectTimeout, logger)
		}
	}
	switch nc, err := NewNATS(top, cfg); {
	case errors.Is(err, ErrNoNATSAccess):
		r.Cluster = noAccess{err}
	case err != nil:
		return nil, err
	default:
		r.Cluster = nc
	}
	if remoteCfg.ProxmoxHost != "" {
		host, err := pool.Client(remoteCfg.ProxmoxSSH(proxmoxName(top)))
		if err != nil {
			return nil, err
		}
		r.Proxmox = remote.NewPCT(host)
	}
	return r, nil
}

// proxmoxName is the Proxmox host's name as the topology gives it (the same for every node here).
func proxmoxName(top *topology.Topology) string {
	for _, name := range top.NodeNames() {
		if h := top.Nodes[name].Proxmox.Host; h != "" {
			return h
		}
	}
	return ""
}

// Targets are the targets of built systems: node -> toplevel, all of commit.
func Targets(toplevels map[string]string, commit string) []Target {
	var ts []Target
	for node, tl := range toplevels {
		ts = append(ts, Target{Node: node, Toplevel: tl, Commit: commit})
	}
	return ts
}

// Deploy plans req and runs it, reporting to tr (nil: the logger): a full rolling deploy in one call.
// The plan is returned also when it was refused; the error is only for a state store that failed.
func (r *Rollout) Deploy(ctx context.Context, req Request, tr Tracker) (*Plan, *Result, error) {
	plan, err := r.Plan(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	return plan, r.Run(ctx, plan, tr), nil
}

// ContainerFor is the container of node name as the topology describes it (without Template and SSH).
func ContainerFor(name string, top *topology.Topology) remote.Container {
	n := top.Nodes[name]
	iface := n.Interface
	if iface == "" {
		iface = "eth0"
	}
	return remote.Container{
		VMID:         n.Proxmox.VMID,
		Hostname:     name,
		Cores:        n.Proxmox.Cores,
		MemoryMiB:    n.Proxmox.MemoryMiB,
		Storage:      n.Proxmox.Storage,
		Interface:    iface,
		Bridge:       n.Proxmox.Bridge,
		Address:      netip.PrefixFrom(n.Address, n.PrefixLength),
		Gateway:      top.Network.Gateway,
		Unprivileged: n.Proxmox.Unprivileged,
		Features:     n.Proxmox.Features,
		RootfsGiB:    n.Proxmox.RootfsGiB,
		OnBoot:       n.Proxmox.OnBoot,
	}
}
