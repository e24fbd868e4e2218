package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestHelpShowsOnlyTheCommandsFlags: each command offers the flags of what it does and no others; a
// flag it does not use is refused as unknown (exit 2), not ignored.
func TestHelpShowsOnlyTheCommandsFlags(t *testing.T) {
	t.Parallel()
	build := []string{"--lxc-builder", "--build-workers", "--build-memory-per-eval", "--allow-force-push", "--keep-workspace",
		"--timeout-checkout", "--timeout-generate", "--timeout-check", "--timeout-build", "--timeout-cleanup", "--timeout-publish", "--timeout-rollout"}
	roll := []string{"--confirm-timeout", "--gate-timeout", "--gate-poll", "--preflight-timeout", "--activation-timeout", "--force", "--revert-all",
		"--max-parallel", "--keep-going"}
	nix := []string{"--nix", "--nix-offline", "--override-input", "--nix-timeout"}
	reach := []string{"--repo", "--rev", "--events", "--git-token-file", "--data-dir", "--nats-url", "--ssh-key-file", "--ssh-known-hosts",
		"--ssh-jump", "--lab", "--lab-dir"}
	proxmox := []string{"--proxmox-host", "--proxmox-storage", "--closure-copy"}
	tests := []struct {
		command  string
		has, not [][]string
	}{
		{command: "run", has: [][]string{build, roll, nix, reach, proxmox, {"--validate-only", "--json"}}, not: [][]string{{"--node", "--all", "--yes"}}},
		{command: "rollout", has: [][]string{build, roll, nix, reach, proxmox, {"--node", "--all", "--yes", "--dry-run"}}, not: [][]string{{"--validate-only"}}},
		{command: "rollback", has: [][]string{roll, nix, reach, {"--to-generation", "--to-rev", "--yes", "--dry-run"}}, not: [][]string{build, proxmox, {"--validate-only"}}},
		{command: "serve", has: [][]string{build, nix, proxmox, {"--repo", "--events", "--data-dir", "--nats-url", "--nats-listen", "--ssh-key-file", "--lab",
			"--listen", "--github-repository", "--deploy-branch", "--webhook-secret-file", "--github-token-file", "--github-api-url", "--public-url",
			"--trusted-signers", "--require-approval", "--approval-timeout", "--confirm-timeout", "--gate-timeout"}},
			not: [][]string{{"--rev", "--force", "--validate-only", "--node", "--yes"}}},
		{command: "approve", has: [][]string{{"--data-dir", "--nats-url"}}, not: [][]string{{"--repo", "--reason"}, build, roll}},
		{command: "reject", has: [][]string{{"--data-dir", "--nats-url", "--reason"}}, not: [][]string{{"--repo"}, build, roll}},
		{command: "pause", has: [][]string{{"--data-dir", "--nats-url", "--reason"}}, not: [][]string{{"--repo"}, build, roll}},
		{command: "generations", has: [][]string{reach, {"--node", "--json"}}, not: [][]string{build, roll, nix, proxmox, {"--all", "--yes"}}},
	}
	flagName := regexp.MustCompile(`(?m)^\s+(?:-\w, )?(--[a-z-]+)`)
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCLI(t, tt.command, "--help")
			if code != exitOK {
				t.Fatalf("%s --help = %d\n%s", tt.command, code, stderr)
			}
			shown := map[string]bool{}
			for _, m := range flagName.FindAllStringSubmatch(stdout, -1) {
				shown[m[1]] = true
			}
			for _, group := range tt.has {
				for _, f := range group {
					if !shown[f] {
						t.Errorf("%s --help lacks %s", tt.command, f)
					}
				}
			}
			for _, group := range tt.not {
				for _, f := range group {
					if shown[f] {
						t.Errorf("%s --help shows %s, which it does not use", tt.command, f)
					}
				}
			}
			if len(tt.not) > 0 {
				f := tt.not[0][0]
				if code, _, stderr := runCLI(t, tt.command, f+"=1"); code != exitUsage || !strings.Contains(stderr, "unknown flag: "+f) {
					t.Errorf("%s %s=1 = %d %q, want %d: unknown flag", tt.command, f, code, stderr, exitUsage)
				}
			}
		})
	}
}
