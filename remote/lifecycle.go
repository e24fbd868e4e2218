package remote

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
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

// DataKeeper is a Proxmox host that carries a directory of a container's rootfs across its
// recreation; PCT is one. Both run on the stopped container (pct mount).
type DataKeeper interface {
	// SaveData copies dir (absolute, inside the container) of container vmid to the host and returns
	// where it is kept; a missing dir is kept empty.
	SaveData(ctx context.Context, vmid int, hostname, dir string) (string, error)
	// RestoreData replaces dir in container vmid's rootfs with what SaveData kept at saved, then
	// deletes that copy.
	RestoreData(ctx context.Context, vmid int, hostname, dir, saved string) error
}

var _ DataKeeper = (*PCT)(nil)

// KeepDir is where on the Proxmox host PCT keeps a container's data across its recreation
// (<KeepDir>/<vmid>), on the storage "local" (its directory /var/lib/vz).
const KeepDir = "/var/lib/vz/cimdeploy-keep"

// dataPath checks that dir is a clean absolute path below / made of plain characters: it is removed
// and replaced inside the rootfs.
func dataPath(dir string) error {
	if !safePath.MatchString(dir) || path.Clean(dir) != dir || dir == "/" || strings.Contains(dir, "/..") {
		return fmt.Errorf("data directory %q: want a clean absolute path such as /var/lib/nats/jetstream", dir)
	}
	return nil
}

var safePath = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)

// saveScript copies the rootfs's $2 of stopped container $1 to $3 on the host (pct mount: the rootfs at
// /var/lib/lxc/VMID/rootfs; cp -a keeps the owners, the mapped ids of an unprivileged container).
const saveScript = `set -eu
vmid=$1 dir=$2 keep=$3
pct mount "$vmid" >/dev/null
trap 'pct unmount "$vmid"' EXIT
src=/var/lib/lxc/$vmid/rootfs$dir
rm -rf "$keep.tmp"
mkdir -p "$keep.tmp"
if [ -d "$src" ]; then cp -a "$src/." "$keep.tmp/"; fi
rm -rf "$keep"
mv "$keep.tmp" "$keep"`

// restoreScript replaces the rootfs's $2 of stopped container $1 with $3, then deletes $3.
const restoreScript = `set -eu
vmid=$1 dir=$2 keep=$3
[ -d "$keep" ] || { echo "no data kept at $keep" >&2; exit 1; }
pct mount "$vmid" >/dev/null
trap 'pct unmount "$vmid"' EXIT
dst=/var/lib/lxc/$vmid/rootfs$dir
rm -rf "$dst"
mkdir -p "$dst"
cp -a "$keep/." "$dst/"
rm -rf "$keep"`

// SaveData implements DataKeeper: the container must be stopped.
func (p *PCT) SaveData(ctx context.Context, vmid int, hostname, dir string) (string, error) {
	keep := fmt.Sprintf("%s/%d", KeepDir, vmid)
	err := dataPath(dir)
	if err == nil {
		err = p.stoppedOwned(ctx, vmid, hostname)
	}
	if err == nil {
		err = p.host.Run(ctx, Cmd{Argv: Script(saveScript, strconv.Itoa(vmid), dir, keep), Step: "save " + dir})
	}
	if err != nil {
		return "", wrapErr(p.host.Name(), fmt.Sprintf("keep %s of container %d (%s)", dir, vmid, hostname), err)
	}
	p.log.Info("container data kept", "host", p.host.Name(), "vmid", vmid, "dir", dir, "at", keep)
	return keep, nil
}

// RestoreData implements DataKeeper: the container must be stopped (created, not started yet).
func (p *PCT) RestoreData(ctx context.Context, vmid int, hostname, dir, saved string) error {
	err := dataPath(dir)
	if err == nil && !strings.HasPrefix(saved, KeepDir+"/") {
		err = fmt.Errorf("kept data %q is not under %s", saved, KeepDir)
	}
	if err == nil {
		err = p.stoppedOwned(ctx, vmid, hostname)
	}
	if err == nil {
		err = p.host.Run(ctx, Cmd{Argv: Script(restoreScript, strconv.Itoa(vmid), dir, saved), Step: "restore " + dir})
	}
	if err != nil {
		return wrapErr(p.host.Name(), fmt.Sprintf("restore %s of container %d (%s)", dir, vmid, hostname), err)
	}
	p.log.Info("container data restored", "host", p.host.Name(), "vmid", vmid, "dir", dir)
	return nil
}

func (p *PCT) stoppedOwned(ctx context.Context, vmid int, hostname string) error {
	st, err := p.owned(ctx, vmid, hostname)
	switch {
	case err != nil:
		return err
	case st != ContainerStopped:
		return fmt.Errorf("container %d is %s, want stopped", vmid, st)
	}
	return nil
}
