package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/rollout"
)

// TestModeFlag: rollout and run take --mode (CIMDEPLOY_ROLLOUT_MODE); a mode that is none of
// switch, test and boot is a usage error naming the flag and the variable, before anything runs.
func TestModeFlag(t *testing.T) {
	for _, cmd := range []string{"rollout", "run"} {
		code, stdout, _ := runCLI(t, cmd, "--help")
		if code != exitOK || !strings.Contains(stdout, "--mode string") || !strings.Contains(stdout, "[CIMDEPLOY_ROLLOUT_MODE]") {
			t.Errorf("%s --help = %d, lacks --mode:\n%s", cmd, code, stdout)
		}
	}
	if _, stdout, _ := runCLI(t, "rollback", "--help"); strings.Contains(stdout, "--mode") {
		t.Error("rollback --help shows --mode, which it does not use")
	}
	code, stdout, stderr := runCLI(t, "rollout", "--repo", t.TempDir(), "--data-dir", t.TempDir(), "--node", "nats-1", "--dry-run", "--mode", "reboot")
	if code != exitUsage || !strings.Contains(stderr, `CIMDEPLOY_ROLLOUT_MODE (--mode): activation mode "reboot": want switch, test or boot`) {
		t.Errorf("--mode reboot = %d\n%s%s", code, stdout, stderr)
	}
	t.Setenv("CIMDEPLOY_ROLLOUT_MODE", "canary")
	code, stdout, stderr = runCLI(t, "run", "--repo", t.TempDir(), "--data-dir", t.TempDir())
	if code != exitUsage || !strings.Contains(stderr, `activation mode "canary"`) {
		t.Errorf("CIMDEPLOY_ROLLOUT_MODE=canary = %d\n%s%s", code, stdout, stderr)
	}
}

func TestModePlanPrinting(t *testing.T) {
	t.Parallel()
	plan := &rollout.Plan{RunID: "r", Commit: "0123456789abcdef", Mode: rollout.ModeTest, Nodes: []rollout.NodePlan{
		{Node: "nats-2", Action: rollout.ActionSwitch, Mode: rollout.ModeBoot, Target: "/nix/store/00000000000000000000000000000000-nixos-system-nats-2",
			Reason:     "switch inhibitors changed (systemd : a -> b): boot and restart the container instead of a live switch",
			Inhibitors: []rollout.InhibitorChange{{Name: "systemd", From: "a", To: "b"}}},
	}}
	var out bytes.Buffer
	printPlan(&out, plan)
	for _, want := range []string{"activation mode: test", "nats-2: switch inhibitors changed, so it boots the new system and its container restarts:",
		"  systemd : a -> b", "boot and restart the container instead of a live switch"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("plan does not say %q:\n%s", want, out.String())
		}
	}
}

func TestModeTestDrift(t *testing.T) {
	t.Parallel()
	rec := rollout.NodeState{Toplevel: "/nix/store/a", Generation: 4,
		Test: &rollout.TestActivation{Toplevel: "/nix/store/b", Commit: "0123456789abcdef", RunID: "r", Since: time.Now()}}
	if got := testDrift("no", "/nix/store/b", rec); got != "test activation of 0123456789ab (boot default: generation 4)" {
		t.Errorf("test activation: %q", got)
	}
	if got := testDrift("switched by hand", "/nix/store/c", rec); got != "switched by hand" {
		t.Errorf("another system: %q", got)
	}
}
