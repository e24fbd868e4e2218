package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
)

// TestRunBuildsOnRemoteBuilder deploys a new commit with every build sent to the lab's Nix remote
// builder (--builders, --max-jobs 0: nothing is built here): the summary names the builder, the
// builder's own store holds the systems it built, Nix copied them back, and the rollout deployed them.
// A builders setting that Nix would choke on is refused before anything runs, naming entry and field.
func TestRunBuildsOnRemoteBuilder(t *testing.T) {
	l := lab.Start(t, lab.Options{Nodes: 3})
	ctx := t.Context()
	if _, err := l.Repo(ctx); err != nil {
		t.Fatal(err)
	}
	spec, err := l.Builder().Spec()
	if err != nil {
		t.Fatal(err)
	}
	repo := newUserRepo(t, l.RepoDir())
	// A lame duck duration no earlier run built, so every node's system is a new derivation.
	ldm := fmt.Sprintf("%ds", 31+time.Now().UnixNano()%100000)
	commit := repo.commit(t, "nats: lame duck "+ldm, map[string]any{"lame_duck_duration": ldm})
	data := t.TempDir()
	args := append([]string{"run", "--repo", repo.dir, "--rev", commit, "--proxmox-host", l.PVE().Address().String(),
		"--builders", spec, "--max-jobs", "0"}, labFlags(l, data)...)
	start := time.Now()
	code, stdout, stderr := runCLI(t, args...)
	t.Logf("run with every build on %s: exit %d in %s\n%s", l.Builder().Address(), code, time.Since(start).Round(time.Millisecond), stdout)
	if code != exitOK {
		t.Fatalf("run = %d\n%s\n%s", code, stdout, stderr)
	}
	machine := "ssh-ng://root@" + l.Builder().Address().String()
	if !strings.Contains(stdout, "on "+machine) {
		t.Errorf("the summary does not say the builds ran on %s", machine)
	}
	for _, n := range l.Nodes() {
		sys := n.CurrentSystem()
		if !strings.Contains(sys, "nixos-system-"+n.Name()) {
			t.Fatalf("%s runs %q", n.Name(), sys)
		}
		if !l.Builder().HasPath(sys) {
			t.Errorf("%s runs %s, which the builder's store does not hold: it was not built there", n.Name(), sys)
		}
	}

	// Broken builders settings are usage errors, before any checkout or build.
	for _, c := range []struct{ builders, want string }{
		{"http://" + l.Builder().Address().String(), "CIMDEPLOY_NIX_BUILDERS: entry 1: URI"},
		{spec + " ; ssh-ng://root@b x86_64-linux /no/such/key", "CIMDEPLOY_NIX_BUILDERS: entry 2: SSH key"},
	} {
		code, stdout, stderr := runCLI(t, "run", "--repo", repo.dir, "--rev", commit, "--builders", c.builders, "--data-dir", t.TempDir())
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("run --builders %q = %d, want %d naming %q\n%s\n%s", c.builders, code, exitUsage, c.want, stdout, stderr)
		}
	}
}
