package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
)

func TestRecreateUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"rollout", "--repo", ".", "--node", "nats-2", "--recreate", "--yes"},
		{"rollout", "--repo", ".", "--node", "nats-2", "--recreate", "--keep-data", "--wipe-data", "--yes"},
		{"rollout", "--repo", ".", "--all", "--recreate", "--keep-data", "--yes"},
		{"rollout", "--repo", ".", "--node", "nats-2", "--keep-data", "--yes"},
	} {
		if code, _, stderr := runCLI(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
	}
}

// TestRolloutRecreatesANodeOnLab: nats-2 gets a container of the lab's pct (powered off, then
// provisioned by a rollout); `rollout --recreate --keep-data` destroys and creates it again from its
// template with its JetStream store carried over, `--wipe-data` with an empty one. In the lab a
// container's rootfs is its node's state directory, and pct destroy deletes its var/lib (where the
// store is): a marker file in the store tells whether the data was kept.
func TestRolloutRecreatesANodeOnLab(t *testing.T) {
	l := lab.Start(t, lab.Options{Nodes: 3})
	ctx := t.Context()
	if _, err := l.Repo(ctx); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	common := append([]string{"--repo", l.RepoDir(), "--rev", "main", "--proxmox-host", l.PVE().Address().String()}, labFlags(l, data)...)
	if code, stdout, stderr := runCLI(t, append([]string{"run"}, common...)...); code != exitOK {
		t.Fatalf("run = %d\n%s\n%s", code, stdout, stderr)
	}
	n2 := l.Node("nats-2")
	if err := n2.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runCLI(t, append([]string{"rollout", "--node", "nats-2", "--yes"}, common...)...); code != exitOK ||
		!strings.Contains(stdout, "provision") {
		t.Fatalf("provision nats-2 = %d\n%s\n%s", code, stdout, stderr)
	}
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(n2.Dir(), "state", "var", "lib", "nats", "jetstream")
	marker := filepath.Join(store, "cimdeploy-test-marker")
	if err := os.WriteFile(marker, []byte("kept\n"), 0o644); err != nil {
		t.Fatalf("nats-2's JetStream store: %v", err)
	}

	for _, c := range []struct {
		flag string
		kept bool
	}{{"--keep-data", true}, {"--wipe-data", false}} {
		code, stdout, stderr := runCLI(t, append([]string{"rollout", "--recreate", "--node", "nats-2", c.flag, "--yes"}, common...)...)
		t.Logf("rollout --recreate %s:\n%s", c.flag, stdout)
		if code != exitOK || !strings.Contains(stdout, "recreate") {
			t.Fatalf("rollout --recreate %s = %d\n%s\n%s", c.flag, code, stdout, stderr)
		}
		if err := l.WaitReady(ctx, 30*time.Second); err != nil {
			t.Fatalf("after --recreate %s: %v", c.flag, err)
		}
		_, err := os.Stat(marker)
		if kept := err == nil; kept != c.kept {
			t.Errorf("after --recreate %s the store's marker is there: %v, want %v", c.flag, kept, c.kept)
		}
		if _, err := os.Stat(store); err != nil {
			t.Errorf("after --recreate %s: no JetStream store: %v", c.flag, err)
		}
	}
}
