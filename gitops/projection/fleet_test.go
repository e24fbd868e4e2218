package projection_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// fleetModule is the repository's own module of role ipld-storage (testdata/golden/fleet holds it too).
const fleetModule = `# The repository's module of role ipld-storage: written by hand, never by cimdeploy.
{ ... }:

{
  # The IPFS swarm port.
  networking.firewall.allowedTCPPorts = [ 4001 ];
}
`

// fleetEvents are the fixtures' cluster (cim-cluster: nats-1..3, its services, no accounts) plus a
// second cluster edge of three (no leaves), two leaves of cim-cluster, a storage node and a node of the repository role
// ipld-storage.
func fleetEvents(t testing.TB) []events.Event {
	t.Helper()
	all, problems := events.Load(t.Context(), "../../fixtures/events")
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	evs := slices.Clone(all[:9])
	add := func(typ, agg string, data map[string]any) {
		raw, err := json.Marshal(data)
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(len(evs) + 1)
		evs = append(evs, events.Event{
			EventID: fmt.Sprintf("fleet-%d", seq), AggregateID: agg, Sequence: seq,
			Timestamp: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), Type: typ, Data: raw,
			Source: events.Source{File: fmt.Sprintf("fleet-%d.json", seq), Line: 1},
		})
	}
	add(events.RoleDefined, "ipld-storage", map[string]any{"name": "ipld-storage", "module": "nixosModules/ipld-storage.nix", "max_unavailable": 2})
	for i, n := range []struct{ name, role, cluster string }{
		{"edge-1", topology.RoleNATSCluster, "edge"},
		{"edge-2", topology.RoleNATSCluster, "edge"},
		{"edge-3", topology.RoleNATSCluster, "edge"},
		{"leaf-a1", topology.RoleNATSLeaf, "cim-cluster"},
		{"leaf-a2", topology.RoleNATSLeaf, "cim-cluster"},
		{"cimstor", topology.RoleStorage, ""},
		{"ipfs-1", "ipld-storage", ""},
	} {
		data := map[string]any{"name": n.name, "system": "x86_64-linux", "state_version": "25.05", "role": n.role,
			"proxmox": map[string]any{"host": "pve1", "vmid": 301 + i, "cores": 1, "memory_mib": 1024,
				"storage": "local-lvm", "bridge": "vmbr0", "unprivileged": true, "features": []string{"nesting=1"}},
			"interfaces": []any{map[string]any{"name": "eth0", "interface_type": "ethernet",
				"addresses": []any{map[string]any{"address": fmt.Sprintf("10.0.1.%d", 1+i), "prefix_length": 19}}}}}
		if n.cluster != "" {
			data["cluster"] = n.cluster
		}
		add(events.NodeAdded, n.name, data)
	}
	return evs
}

func fleet(t testing.TB) *topology.Topology {
	t.Helper()
	top, problems := topology.Fold(fleetEvents(t))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	return top
}

// fleetDir is a repository holding the fleet's repository role module.
func fleetDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "nixosModules"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nixosModules", "ipld-storage.nix"), []byte(fleetModule), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestGoldenFleet: the projection of two clusters, their leaves, a storage node and a repository role.
func TestGoldenFleet(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("testdata", "golden", "fleet")
	module, err := os.ReadFile(filepath.Join(dir, "nixosModules", "ipld-storage.nix"))
	if err != nil || string(module) != fleetModule {
		t.Fatalf("the golden fleet's repository module is not fleetModule (%v)", err)
	}
	files := render(t, fleet(t), projection.Options{})
	if *update {
		if _, err := projection.Write(dir, files); err != nil {
			t.Fatal(err)
		}
		return
	}
	diff, err := projection.Diff(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if diff != "" {
		t.Errorf("fleet differs from the golden files (go test ./gitops/projection -update):\n%s", diff)
	}
}

// TestFleetFiles: the modules of the roles the nodes have, and the repository's module named, not
// generated.
func TestFleetFiles(t *testing.T) {
	t.Parallel()
	var paths []string
	for _, f := range render(t, fleet(t), projection.Options{}) {
		p := f.Path
		if f.Role != "" {
			if f.Data != nil {
				t.Errorf("repository module %s has data", f.Path)
			}
			p += " (" + f.Role + ")"
		}
		paths = append(paths, p)
	}
	want := "flake.nix nixosModules/common.nix nixosModules/nats-cluster.nix nixosModules/nats-leaf.nix nixosModules/storage.nix topology.nix nixosModules/ipld-storage.nix (ipld-storage)"
	if got := strings.Join(paths, " "); got != want {
		t.Errorf("files %s\nwant %s", got, want)
	}
}

// TestRepositoryModuleNeverWritten: Write leaves the repository's module as it is, byte for byte and
// inode for inode, on the first write and on later ones.
func TestRepositoryModuleNeverWritten(t *testing.T) {
	t.Parallel()
	dir := fleetDir(t)
	path := filepath.Join(dir, "nixosModules", "ipld-storage.nix")
	before, _ := os.Stat(path)
	files := render(t, fleet(t), projection.Options{})
	for range 2 {
		changed, err := projection.Write(dir, files)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(changed, "nixosModules/ipld-storage.nix") {
			t.Errorf("Write changed the repository module: %v", changed)
		}
	}
	after, _ := os.Stat(path)
	data, _ := os.ReadFile(path)
	if string(data) != fleetModule || !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Errorf("the repository module was touched:\n%s", data)
	}
	if diff, err := projection.Diff(dir, files); err != nil || diff != "" {
		t.Errorf("Diff after Write = %v\n%s", err, diff)
	}
}

// TestRepositoryModuleHostile: a repository module that is missing, a link (inside or out of the
// repository), a directory, a FIFO, too large, or behind a linked directory is refused by Write and Diff
// with an error naming the role's RoleDefined event and the path, and nothing is written.
func TestRepositoryModuleHostile(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret.nix")
	if err := os.WriteFile(secret, []byte("{ }"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T, dir, module string)
		want   string
		unsafe bool
	}{
		{"missing", func(t *testing.T, dir, module string) { os.Remove(module) }, "is not in the repository", false},
		{"symlink out of the repository", func(t *testing.T, dir, module string) {
			os.Remove(module)
			must(t, os.Symlink(secret, module))
		}, "is a symlink", true},
		{"symlink inside the repository", func(t *testing.T, dir, module string) {
			os.Remove(module)
			must(t, os.WriteFile(filepath.Join(dir, "real.nix"), []byte(fleetModule), 0o644))
			must(t, os.Symlink("../real.nix", module))
		}, "is a symlink", true},
		{"directory", func(t *testing.T, dir, module string) {
			os.Remove(module)
			must(t, os.Mkdir(module, 0o755))
		}, "is not a regular file", true},
		{"fifo", func(t *testing.T, dir, module string) {
			os.Remove(module)
			must(t, syscall.Mkfifo(module, 0o644))
		}, "is not a regular file", true},
		{"too large", func(t *testing.T, dir, module string) {
			must(t, os.Truncate(module, projection.MaxModuleSize+1))
		}, "over 1048576", false},
		{"linked nixosModules", func(t *testing.T, dir, module string) {
			must(t, os.RemoveAll(filepath.Join(dir, "nixosModules")))
			must(t, os.MkdirAll(filepath.Join(outside, "mods"), 0o755))
			must(t, os.WriteFile(filepath.Join(outside, "mods", "ipld-storage.nix"), []byte(fleetModule), 0o644))
			must(t, os.Symlink(filepath.Join(outside, "mods"), filepath.Join(dir, "nixosModules")))
		}, "nixosModules is a symlink", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := fleetDir(t)
			tc.setup(t, dir, filepath.Join(dir, "nixosModules", "ipld-storage.nix"))
			files := render(t, fleet(t), projection.Options{})
			_, werr := projection.Write(dir, files)
			_, derr := projection.Diff(dir, files)
			for _, err := range []error{werr, derr} {
				if err == nil {
					t.Fatal("accepted")
				}
				msg := err.Error()
				if !strings.Contains(msg, `the RoleDefined event of role "ipld-storage" names module nixosModules/ipld-storage.nix`) ||
					!strings.Contains(msg, tc.want) || !errors.Is(err, projection.ErrModule) {
					t.Errorf("error %q, want the event, the path and %q", msg, tc.want)
				}
				if tc.unsafe && !errors.Is(err, projection.ErrUnsafePath) {
					t.Errorf("error %q does not wrap ErrUnsafePath", msg)
				}
			}
			if _, err := os.Lstat(filepath.Join(dir, "flake.nix")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Write wrote flake.nix despite the bad module (%v)", err)
			}
			if data, _ := os.ReadFile(secret); string(data) != "{ }" {
				t.Errorf("the file outside was changed: %q", data)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
