package remote_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/remote/remotetest"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// fakeWorld is the contract suite's world of in-memory fakes.
func fakeWorld(t *testing.T) *world {
	px := remotetest.NewProxmox("pve")
	nodes := []*remotetest.Node{remotetest.NewNode("nats-1", nil), remotetest.NewNode("nats-2", nil)}
	return &world{
		proxmox: px,
		nodes:   []remote.Node{nodes[0], nodes[1]},
		template: func(t *testing.T, name string) (string, bool) {
			sum, ok := px.Templates()[name]
			return sum, ok
		},
		parts:   func(t *testing.T) []string { return nil },
		corrupt: func(t *testing.T, name string) { px.CorruptTemplate(name) },
		smallDisk: func(t *testing.T, free int64) remote.Proxmox {
			small := remotetest.NewProxmox("pve")
			small.SetFree(free)
			return small
		},
		cutUpload: func(t *testing.T, upload func() (remote.Uploaded, error)) (remote.Uploaded, error) {
			px.CutNextUpload(4 << 20)
			return upload()
		},
		has: func(t *testing.T, i int, paths []string) []string { return nodes[i].Has(paths...) },
		newContainer: func(t *testing.T) (remote.Container, string) {
			n := remotetest.NewNode("nats-3", nil)
			px.Attach(n)
			file := tarball(t)
			c := testContainer("nats-3", 203, netip.MustParseAddr("10.0.0.13"))
			c.SSH = n
			return c, file
		},
		stopContainer: func(t *testing.T, vmid int) {
			c, st := px.Container(vmid)
			if st == remote.ContainerMissing {
				t.Fatalf("no container %d", vmid)
			}
			px.AddContainer(c, false)
		},
	}
}

// testContainer is a container as the production topology describes one.
func testContainer(name string, vmid int, addr netip.Addr) remote.Container {
	return remote.Container{
		VMID: vmid, Hostname: name, Cores: 1, MemoryMiB: 512, Storage: "local-lvm", Interface: "eth0",
		Bridge: "vmbr0", Address: netip.PrefixFrom(addr, 24), Gateway: netip.MustParseAddr("10.0.0.1"),
		Unprivileged: true, Features: []string{"nesting=1"},
	}
}

// labWorld is the contract suite's world of the lab: pct over SSH to pve, nodes over SSH, real Nix.
func labWorld(t *testing.T) *world {
	l := shared.Get(t)
	cfg := labConfig(l)
	pool, _ := newPool(t, cfg)
	pve := client(t, pool, "pve", cfg.ProxmoxHost)
	var nodes []remote.Node
	for _, n := range l.Nodes() {
		sn, err := pool.Node(remote.Host{Name: n.Name(), Addr: n.Address().String()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, sn)
	}
	cache := l.PVE().TemplateCache()
	return &world{
		proxmox: remote.NewPCT(pve),
		nodes:   nodes,
		template: func(t *testing.T, name string) (string, bool) {
			f, err := os.Open(filepath.Join(cache, name))
			if os.IsNotExist(err) {
				return "", false
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			h := sha256.New()
			if _, err := io.Copy(h, f); err != nil {
				t.Fatal(err)
			}
			return hex.EncodeToString(h.Sum(nil)), true
		},
		parts: func(t *testing.T) []string {
			parts, _ := filepath.Glob(filepath.Join(cache, ".*.part"))
			return parts
		},
		corrupt: func(t *testing.T, name string) {
			if err := os.WriteFile(filepath.Join(cache, name), []byte("not a template"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		smallDisk: func(t *testing.T, free int64) remote.Proxmox {
			// A tmpfs of that size, mounted inside pve's mount namespace only.
			dir := t.TempDir()
			ctx := t.Context()
			if err := pve.Run(ctx, remote.Cmd{Argv: []string{"mount", "-t", "tmpfs", "-o", "size=" + strconv.FormatInt(free, 10), "cimdeploy-test", dir}}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := pve.Run(ctx, remote.Cmd{Argv: []string{"umount", dir}}); err != nil {
					t.Error(err)
				}
			})
			small := cfg
			small.TemplateDir = dir
			p, _ := newPool(t, small)
			return remote.NewPCT(client(t, p, "pve", cfg.ProxmoxHost))
		},
		cutUpload: func(t *testing.T, upload func() (remote.Uploaded, error)) (remote.Uploaded, error) {
			type result struct {
				up  remote.Uploaded
				err error
			}
			done := make(chan result, 1)
			go func() {
				up, err := upload()
				done <- result{up, err}
			}()
			// Cut once a part of at least 4 MiB is on the host.
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case r := <-done:
					t.Fatalf("the upload ended before the cut: %+v, %v", r.up, r.err)
				case <-tick.C:
				}
				parts, _ := filepath.Glob(filepath.Join(cache, ".*.part"))
				if len(parts) == 1 {
					if st, err := os.Stat(parts[0]); err == nil && st.Size() >= 4<<20 {
						t.Logf("cutting pve's connections at %d bytes of %s", st.Size(), filepath.Base(parts[0]))
						l.PVE().DropSSHConnections()
						r := <-done
						return r.up, r.err
					}
				}
			}
		},
		has: func(t *testing.T, i int, paths []string) []string {
			quoted := make([]string, len(paths))
			for j, p := range paths {
				quoted[j] = remote.Quote(p)
			}
			out, err := l.Nodes()[i].Run(t.Context(), "nix-store --check-validity --print-invalid "+strings.Join(quoted, " "))
			if err != nil {
				t.Fatal(err)
			}
			invalid := map[string]bool{}
			for _, p := range strings.Fields(out) {
				invalid[p] = true
			}
			var have []string
			for _, p := range paths {
				if !invalid[p] {
					have = append(have, p)
				}
			}
			return have
		},
		newContainer: func(t *testing.T) (remote.Container, string) {
			// nats-2, powered off and not in pct's ledger: a container that does not exist yet,
			// which pct start boots. Afterwards the lab is as it was: nats-2 runs, the ledger is empty.
			n := l.Node("nats-2")
			topo := l.Topology()
			c := rollout.ContainerFor(n.Name(), topo)
			ledger := filepath.Join(l.PVE().Dir(), "state", "pct", strconv.Itoa(c.VMID)+".json")
			if _, err := os.Stat(ledger); err == nil {
				t.Fatalf("pct ledger has %s already", ledger)
			}
			if err := n.PowerOff(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := os.Remove(ledger); err != nil && !os.IsNotExist(err) {
					t.Error(err)
				}
				if !n.SSHDRunning() {
					if err := n.Boot(ctx); err != nil {
						t.Error(err)
					}
				}
				// A container made from the template has no secrets (cimdeploy's rollout installs them).
				if err := n.InstallSecrets(ctx); err != nil {
					t.Error(err)
				}
				if err := l.WaitReady(ctx, 30*time.Second); err != nil {
					t.Error(err)
				}
			})
			sn, err := pool.Node(remote.Host{Name: n.Name(), Addr: n.Address().String()}, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.SSH = sn
			return c, tarball(t)
		},
		stopContainer: func(t *testing.T, vmid int) {
			if err := pve.Run(t.Context(), remote.Cmd{Argv: []string{"pct", "stop", strconv.Itoa(vmid)}}); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// tarball is a small, unique .tar.xz (pct create lists it).
func tarball(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "id"), []byte(t.Name()+time.Now().String()), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "nixos-system-x86_64-linux.tar.xz")
	if out, err := exec.Command("tar", "-cJf", file, "-C", root, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	return file
}

var _ = lab.SystemProfile
