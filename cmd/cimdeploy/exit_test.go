package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"github.com/cimdeploy/cimdeploy/rollout/rollouttest"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshIdentity writes a fresh private key and an empty known_hosts file: settings a deploy needs that
// are never used when the host refuses the connection.
func sshIdentity(t *testing.T) (key, knownHosts string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key, knownHosts = filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(knownHosts, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return key, knownHosts
}

// refusedAddr is a loopback address where nothing listens: a connection to it is refused.
func refusedAddr(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.Listener.Addr().String()
	srv.Close()
	return addr
}

func nixArgs(t *testing.T) []string {
	stub, err := filepath.Abs("../../fixtures/lab/nixpkgs")
	if err != nil {
		t.Fatal(err)
	}
	hm, err := filepath.Abs("../../fixtures/lab/home-manager") // the fixtures have a domain admin
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--override-input", "nixpkgs=path:" + stub, "--override-input", "home-manager=path:" + hm, "--nix-offline"}
}

// TestExitCodeInfrastructure: a repository that cannot be reached and a host that refuses are
// infrastructure errors (exit 3), as the README says, through every command that meets them.
func TestExitCodeInfrastructure(t *testing.T) {
	t.Parallel()
	repo := infraRepo(t)
	key, kh := sshIdentity(t)
	refused := refusedAddr(t)
	nkey := rollouttest.SystemNkeyFile(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "repository URL refused", args: []string{"run", "--validate-only", "--repo", "http://" + refused + "/infra.git"}, want: "connection refused"},
		{name: "no repository at the path", args: []string{"run", "--validate-only", "--repo", filepath.Join(t.TempDir(), "none")}, want: "repository not found"},
		// The fixtures define NATS accounts: opening the cluster needs the system user.
		{name: "generations through a jump host that refuses", args: []string{"generations", "--node", "nats-1", "--repo", repo,
			"--ssh-jump", refused, "--ssh-key-file", key, "--ssh-known-hosts", kh, "--system-nkey-file", nkey}, want: "refused"},
		{name: "rollback, nodes refuse", args: []string{"rollback", "--node", "nats-1", "--yes", "--repo", repo,
			"--ssh-jump", refused, "--ssh-key-file", key, "--ssh-known-hosts", kh, "--system-nkey-file", nkey}, want: "refused"},
		{name: "deploy run, Proxmox host refuses", args: append([]string{"run", "--repo", repo, "--proxmox-host", refused,
			"--ssh-key-file", key, "--ssh-known-hosts", kh}, nixArgs(t)...), want: "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCLI(t, append(tt.args, "--data-dir", t.TempDir())...)
			if code != exitInfra || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", code, exitInfra, tt.want, stdout, stderr)
			}
		})
	}
}

// cancelOn is an output that cancels the command's context when a line containing trigger is written.
type cancelOn struct {
	mu      sync.Mutex
	buf     strings.Builder
	trigger string
	cancel  context.CancelFunc
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if strings.Contains(c.buf.String(), c.trigger) {
		c.cancel()
	}
	return len(p), nil
}

func (c *cancelOn) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// TestExitCodeInterrupted: an interrupt (the command's context cancelled, as SIGINT and SIGTERM do)
// at any moment exits 130: before anything started, while a fetch hangs, in the middle of the flake
// check, and in the commands that do not run the pipeline.
func TestExitCodeInterrupted(t *testing.T) {
	t.Parallel()
	repo := infraRepo(t)

	// A git server that never answers: the checkout hangs until cancelled.
	fetching := make(chan struct{}, 1)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case fetching <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	}))
	t.Cleanup(hang.Close)

	tests := []struct {
		name    string
		args    []string
		trigger string // cancel when the output shows it; empty: cancelled before the start
		during  chan struct{}
	}{
		{name: "run before the start", args: []string{"run", "--validate-only", "--repo", repo}},
		{name: "runs before the start", args: []string{"runs"}},
		{name: "generate before the start", args: []string{"generate", "--events", fixtures, "--out", t.TempDir()}},
		{name: "run during the checkout", args: []string{"run", "--validate-only", "--repo", hang.URL + "/infra.git"}, during: fetching},
		{name: "run during the check", args: append([]string{"run", "--validate-only", "--repo", repo}, nixArgs(t)...), trigger: "stage check started"},
		{name: "run during the generate stage", args: append([]string{"run", "--validate-only", "--repo", repo}, nixArgs(t)...), trigger: "stage generate started"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			out := &cancelOn{trigger: "\x00never", cancel: cancel}
			switch {
			case tt.trigger != "":
				out.trigger = tt.trigger
			case tt.during != nil:
				go func() {
					select {
					case <-tt.during:
						cancel()
					case <-ctx.Done():
					}
				}()
			default:
				cancel()
			}
			var stderr strings.Builder
			start := time.Now()
			code := run(ctx, append(tt.args, "--data-dir", t.TempDir()), out, &stderr)
			if code != exitCanceled {
				t.Errorf("exit %d, want %d after %s\nstdout:\n%s\nstderr:\n%s", code, exitCanceled, time.Since(start), out, stderr.String())
			}
		})
	}
}

// TestZeroOrNegativeSettingIsAUsageError: a timeout, a worker count or a memory bound of zero or
// less, given by a flag or a variable, is refused with exit 2 and named; unset keeps the default.
func TestZeroOrNegativeSettingIsAUsageError(t *testing.T) {
	// Not parallel: it sets variables of the process.
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "stage timeout flag", args: []string{"run", "--validate-only", "--repo", ".", "--timeout-build", "0s"}, want: "--timeout-build (CIMDEPLOY_TIMEOUT_BUILD) 0s"},
		{name: "negative cleanup timeout", args: []string{"run", "--validate-only", "--repo", ".", "--timeout-cleanup=-1m"}, want: "--timeout-cleanup"},
		{name: "build workers flag", args: []string{"run", "--validate-only", "--repo", ".", "--build-workers", "0"}, want: "--build-workers (CIMDEPLOY_BUILD_WORKERS) 0: want at least 1"},
		{name: "memory bound flag", args: []string{"run", "--validate-only", "--repo", ".", "--build-memory-per-eval", "-512"}, want: "--build-memory-per-eval"},
		{name: "nix timeout variable", env: map[string]string{"CIMDEPLOY_NIX_TIMEOUT": "0"}, args: []string{"run", "--validate-only", "--repo", "."},
			want: "CIMDEPLOY_NIX_TIMEOUT (--nix-timeout)=0"},
		{name: "build workers variable", env: map[string]string{"CIMDEPLOY_BUILD_WORKERS": "0"}, args: []string{"run", "--validate-only", "--repo", "."},
			want: "CIMDEPLOY_BUILD_WORKERS (--build-workers)=0"},
		{name: "kill grace variable", env: map[string]string{"CIMDEPLOY_NIX_KILL_GRACE": "0s"}, args: []string{"run", "--validate-only", "--repo", "."},
			want: "CIMDEPLOY_NIX_KILL_GRACE=0s"},
		{name: "store timeout variable", env: map[string]string{"CIMDEPLOY_NATS_TIMEOUT": "0s"}, args: []string{"runs"}, want: "CIMDEPLOY_NATS_TIMEOUT=0s"},
		{name: "rollout gate timeout", args: []string{"rollout", "--all", "--yes", "--repo", ".", "--gate-timeout", "0s"}, want: "--gate-timeout"},
		{name: "ssh connect timeout", args: []string{"generations", "--node", "nats-1", "--repo", ".", "--ssh-connect-timeout", "0s"}, want: "--ssh-connect-timeout"},
		{name: "ssh keepalive variable", env: map[string]string{"CIMDEPLOY_SSH_KEEPALIVE": "-5s"}, args: []string{"rollback", "--all", "--yes", "--repo", "."},
			want: "CIMDEPLOY_SSH_KEEPALIVE=-5s"},
		{name: "lab timeout", args: []string{"lab", "up", "--dir", "never-made", "--timeout", "0s"}, want: "--timeout 0s"},
		{name: "lab nodes", args: []string{"lab", "up", "--dir", "never-made", "--nodes", "0"}, want: "--nodes 0"},
		{name: "unknown flag", args: []string{"runs", "--no-such-flag"}, want: "unknown flag: --no-such-flag"},
		{name: "argument", args: []string{"runs", "extra"}, want: `unknown command "extra"`},
		{name: "command", args: []string{"sideways"}, want: `unknown command "sideways"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			args := tt.args
			if args[0] != "lab" && args[0] != "sideways" {
				args = append(args, "--data-dir", t.TempDir())
			}
			code, stdout, stderr := runCLI(t, args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, want %d naming %q\nstdout:\n%s\nstderr:\n%s", code, exitUsage, tt.want, stdout, stderr)
			}
		})
	}
}
