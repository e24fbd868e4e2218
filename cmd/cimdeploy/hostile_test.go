package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileTreeIsRefused runs `cimdeploy run` on branches an attacker could push: committed symlinks
// that point outside the repository (relative, absolute, through a chain, into /dev) and a linked
// output directory. Each run fails in its checkout with the path named, and no byte of the file outside
// shows anywhere: not on stdout or stderr, not in the run log, not in the state store; nothing is
// written outside the workspace.
func TestHostileTreeIsRefused(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	secret := fmt.Sprintf("cimdeploy-secret-%x", randomBytes(t, 8))
	secretFile := filepath.Join(outside, "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Enough ".." to reach / from any workspace, then the secret's absolute path.
	climb := strings.Repeat("../", 40) + strings.TrimPrefix(secretFile, "/")
	keyFile, knownHosts := sshIdentity(t) // the runs never reach a host

	tests := []struct {
		name   string
		links  map[string]string // path in the repository -> link target
		deploy bool
		want   string // in the error
	}{
		{"relative link to a secret", map[string]string{"topology.nix": climb}, false, `"topology.nix": symlink to`},
		{"absolute link to a secret", map[string]string{"topology.nix": secretFile}, false, `"topology.nix": symlink to`},
		{"chain of links", map[string]string{"nixosModules/up": "..", "events/up": "../nixosModules/up", "flake.nix": "events/up/" + climb}, false, `"flake.nix": symlink to`},
		{"event linked to /dev/zero", map[string]string{"events/0010-zero.json": "/dev/zero"}, false, `"events/0010-zero.json": symlink to "/dev/zero" is absolute`},
		{"event linked to stdin", map[string]string{"events/0010-stdin.json": "/dev/stdin"}, false, `"events/0010-stdin.json": symlink to "/dev/stdin" is absolute`},
		{"output directory linked outside, deploy run", map[string]string{"nixosModules": strings.Repeat("../", 40) + strings.TrimPrefix(outside, "/")}, true, `"nixosModules": symlink to`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			repo := infraRepo(t)
			for p, target := range tt.links {
				full := filepath.Join(repo, p)
				os.RemoveAll(full)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, full); err != nil {
					t.Fatal(err)
				}
			}
			git := func(args ...string) {
				cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@cim.local"}, args...)...)
				cmd.Dir = repo
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("git %v: %v\n%s", args, err, out)
				}
			}
			git("add", "-A")
			git("commit", "-q", "-m", "crafted")

			data := t.TempDir()
			args := []string{"run", "--repo", repo, "--rev", "main", "--data-dir", data, "--nix-offline"}
			if tt.deploy {
				args = append(args, "--ssh-key-file", keyFile, "--ssh-known-hosts", knownHosts, "--proxmox-host", "127.0.0.1")
			} else {
				args = append(args, "--validate-only")
			}
			before := listDir(t, outside)
			code, stdout, stderr := runCLI(t, args...)
			if code != exitFailed || !strings.Contains(stdout+stderr, tt.want) || !strings.Contains(stdout, "stage checkout failed") {
				t.Fatalf("run = %d, want %d and %q\n%s\n%s", code, exitFailed, tt.want, stdout, stderr)
			}
			if strings.Contains(stdout+stderr, secret) {
				t.Errorf("the secret shows in the output")
			}
			// The store (JetStream's files), the run log and every workspace left: no byte of it.
			filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return nil
				}
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) {
					t.Errorf("the secret is in %s", p)
				}
				return nil
			})
			code, stdout, _ = runCLI(t, "runs", "--data-dir", data)
			if code != exitOK || !strings.Contains(stdout, "failed") || strings.Contains(stdout, secret) {
				t.Errorf("runs = %d\n%s", code, stdout)
			}
			if after := listDir(t, outside); after != before {
				t.Errorf("the run wrote outside: %s, was %s", after, before)
			}
		})
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// listDir is the names, sizes and modes under dir, as one string.
func listDir(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, _ := d.Info()
		fmt.Fprintf(&b, "%s %v %d\n", p, d.Type(), fi.Size())
		return nil
	})
	return b.String()
}
