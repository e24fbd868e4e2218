package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
)

// TestLabCommands runs a real 2-node lab through `cimdeploy lab up|status|env|down`.
func TestLabCommands(t *testing.T) {
	base, release, err := lab.ReserveBase(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	dir := t.TempDir()
	flags := []string{"--dir", dir}
	t.Cleanup(func() { runCLI(t, append([]string{"lab", "down"}, flags...)...) })

	code, stdout, stderr := runCLI(t, append([]string{"lab", "up", "--nodes", "2", "--base", base.String()}, flags...)...)
	if code != exitOK || !strings.Contains(stdout, "2 nodes healthy and clustered") {
		t.Fatalf("lab up = %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("%s", stdout)

	code, stdout, _ = runCLI(t, append([]string{"lab", "up", "--nodes", "2", "--base", base.String()}, flags...)...)
	if code != exitOK || !strings.Contains(stdout, "already up") {
		t.Errorf("second lab up = %d\n%s", code, stdout)
	}

	code, stdout, stderr = runCLI(t, append([]string{"lab", "status"}, flags...)...)
	if code != exitOK || !strings.Contains(stdout, "nats-2") || !strings.Contains(stdout, "MiB resident") {
		t.Errorf("lab status = %d\n%s%s", code, stdout, stderr)
	}

	code, stdout, _ = runCLI(t, append([]string{"lab", "env", "--json"}, flags...)...)
	var env map[string]string
	if err := json.Unmarshal([]byte(stdout), &env); code != exitOK || err != nil {
		t.Fatalf("lab env --json = %d, %v\n%s", code, err, stdout)
	}
	if !strings.HasSuffix(env["CIMDEPLOY_SSH_KNOWN_HOSTS"], "/ssh/known_hosts") ||
		!strings.Contains(env["CIMDEPLOY_NIX_OVERRIDE_INPUTS"], "nixpkgs=path:"+dir+"/nixpkgs") ||
		!strings.Contains(env["CIMDEPLOY_LAB_NIX_ARGS"], "--override-input nixpkgs path:"+dir+"/nixpkgs") ||
		!strings.Contains(env["CIMDEPLOY_LAB_NODES"], "nats-1="+strings.TrimSuffix(base.String(), "0")+"11") ||
		env["CIMDEPLOY_REPO"] != dir+"/repo" {
		t.Errorf("lab env: %v", env)
	}
	code, stdout, _ = runCLI(t, append([]string{"lab", "env"}, flags...)...)
	if code != exitOK || !strings.Contains(stdout, "export CIMDEPLOY_SSH_KEY_FILE="+dir+"/ssh/id_ed25519\n") {
		t.Errorf("lab env = %d\n%s", code, stdout)
	}

	code, stdout, _ = runCLI(t, append([]string{"lab", "down"}, flags...)...)
	if code != exitOK || !strings.Contains(stdout, "stopped") {
		t.Errorf("lab down = %d\n%s", code, stdout)
	}
	code, _, _ = runCLI(t, append([]string{"lab", "status"}, flags...)...)
	if code != exitFailed {
		t.Errorf("lab status after down = %d, want %d", code, exitFailed)
	}
}

func TestLabUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "base not loopback", args: []string{"lab", "up", "--base", "10.0.0.0"}, want: "loopback"},
		{name: "one node", args: []string{"lab", "up", "--nodes", "1"}, want: "want 2 to 200"},
		{name: "fewer nodes than members", args: []string{"lab", "up", "--clusters", "2", "--nodes", "5"}, want: "2 clusters of 3 need 6 members"},
		{name: "cluster of one", args: []string{"lab", "up", "--clusters", "3", "--cluster-size", "1"}, want: "cluster size 1"},
		{name: "no clusters", args: []string{"lab", "up", "--clusters", "0"}, want: "--clusters 0"},
		{name: "no lab", args: []string{"lab", "status", "--dir", "/nonexistent/lab"}, want: "cimdeploy lab up"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("%v = %d, %q; want %d mentioning %q", tc.args, code, stderr, exitUsage, tc.want)
			}
		})
	}
	code, stdout, _ := runCLI(t, "lab", "down", "--dir", t.TempDir())
	if code != exitOK || !strings.Contains(stdout, "no lab") {
		t.Errorf("lab down without a lab = %d %q", code, stdout)
	}
}
