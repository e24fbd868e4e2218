package deploy

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"golang.org/x/crypto/ssh"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// sshFiles writes a fresh private key and an empty known_hosts file: what a deploy run needs to
// exist, never used when no host is reached.
func sshFiles(t *testing.T) (key, knownHosts string) {
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

func TestLoadReadsTheEnvironmentOnce(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"CIMDEPLOY_REPO":                 "https://git.example/infra.git",
		"CIMDEPLOY_TIMEOUT_BUILD":        "2h",
		"CIMDEPLOY_BUILD_WORKERS":        "3",
		"CIMDEPLOY_NIX_OVERRIDE_INPUTS":  "nixpkgs=path:/srv/nixpkgs",
		"CIMDEPLOY_SSH_PORT":             "2222",
		"CIMDEPLOY_ROLLOUT_GATE_TIMEOUT": "1m",
		"CIMDEPLOY_ROLLOUT_REVERT_ALL":   "true",
		"CIMDEPLOY_LAB_DIR":              "lab",
	}
	c, err := Load(t.Context(), envconfig.MapLookuper(env))
	if err != nil {
		t.Fatal(err)
	}
	if c.Repo != env["CIMDEPLOY_REPO"] || c.BuildTimeout != 2*time.Hour || c.BuildWorkers != 3 ||
		c.Nix.OverrideInputs["nixpkgs"] != "path:/srv/nixpkgs" || c.Remote.Port != 2222 ||
		c.Rollout.GateTimeout != time.Minute || !c.RevertAll || c.LabDir != "lab" {
		t.Errorf("Load = %+v", c)
	}
	// Unset variables get their defaults.
	if c.Rev != "main" || c.Events != "events" || c.CheckoutTimeout != 5*time.Minute || c.Store.DataDir != ".cimdeploy" ||
		c.Remote.User != "root" || c.Rollout.ConfirmTimeout != 5*time.Minute {
		t.Errorf("defaults: %+v", c)
	}
}

func TestLoadNamesTheMalformedVariable(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{env: map[string]string{"CIMDEPLOY_TIMEOUT_BUILD": "soon"}, want: `CIMDEPLOY_TIMEOUT_BUILD="soon": time: invalid duration`},
		{env: map[string]string{"CIMDEPLOY_SSH_PORT": "x"}, want: `CIMDEPLOY_SSH_PORT="x": strconv.ParseInt`},
		{env: map[string]string{"CIMDEPLOY_NIX_TIMEOUT": "1 hour"}, want: `CIMDEPLOY_NIX_TIMEOUT="1 hour"`},
	} {
		_, err := Load(t.Context(), envconfig.MapLookuper(tt.env))
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%v) = %v, want a *ConfigError with %q", tt.env, err, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	key, kh := sshFiles(t)
	repo := t.TempDir()
	base := map[string]string{"CIMDEPLOY_REPO": repo, "CIMDEPLOY_DATA_DIR": t.TempDir()}
	with := func(more map[string]string) map[string]string {
		env := map[string]string{}
		for _, m := range []map[string]string{base, more} {
			for k, v := range m {
				env[k] = v
			}
		}
		return env
	}
	ssh := map[string]string{"CIMDEPLOY_SSH_KEY_FILE": key, "CIMDEPLOY_SSH_KNOWN_HOSTS": kh}
	tests := []struct {
		name  string
		env   map[string]string
		kind  pipeline.Kind
		flags map[string]Flag
		want  []string // substrings of the error; none: valid
	}{
		{name: "validate run", env: base, kind: pipeline.KindValidate},
		{name: "deploy run with SSH", env: with(ssh), kind: pipeline.KindDeploy},
		{name: "deploy run without SSH", env: base, kind: pipeline.KindDeploy, want: []string{"deploying needs SSH to the nodes", "CIMDEPLOY_SSH_KNOWN_HOSTS is empty"}},
		{name: "no repository", env: map[string]string{}, kind: pipeline.KindValidate, want: []string{"CIMDEPLOY_REPO"}},
		{name: "bad revision", env: with(map[string]string{"CIMDEPLOY_REV": "../etc"}), kind: pipeline.KindValidate, want: []string{"../etc"}},
		{name: "lxc builder", env: with(map[string]string{"CIMDEPLOY_LXC_BUILDER": "docker"}), kind: pipeline.KindValidate, want: []string{"CIMDEPLOY_LXC_BUILDER", "docker"}},
		{name: "zero stage timeout", env: with(map[string]string{"CIMDEPLOY_TIMEOUT_BUILD": "0s"}), kind: pipeline.KindValidate,
			want: []string{"CIMDEPLOY_TIMEOUT_BUILD=0s: want a positive duration"}},
		{name: "zero workers, every problem at once", env: with(map[string]string{"CIMDEPLOY_BUILD_WORKERS": "0", "CIMDEPLOY_NIX_KILL_GRACE": "-1s"}),
			kind: pipeline.KindValidate, want: []string{"CIMDEPLOY_BUILD_WORKERS=0: want at least 1", "CIMDEPLOY_NIX_KILL_GRACE=-1s"}},
		{name: "the variable's flag is named", env: with(map[string]string{"CIMDEPLOY_NIX_TIMEOUT": "0"}), kind: pipeline.KindValidate,
			flags: map[string]Flag{"CIMDEPLOY_NIX_TIMEOUT": {Name: "nix-timeout"}}, want: []string{"CIMDEPLOY_NIX_TIMEOUT (--nix-timeout)=0"}},
		{name: "a rollout setting of a deploy run", env: with(map[string]string{"CIMDEPLOY_SSH_KEEPALIVE": "-5s", "CIMDEPLOY_ROLLOUT_GATE_POLL": "1h"}),
			kind: pipeline.KindDeploy, want: []string{"CIMDEPLOY_SSH_KEEPALIVE=-5s", "CIMDEPLOY_ROLLOUT_GATE_POLL 1h0m0s is longer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(t.Context(), envconfig.MapLookuper(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			for v, f := range tt.flags {
				c.BindFlag(v, f)
			}
			err = c.Validate(tt.kind)
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("Validate(%s) = %v, want nil", tt.kind, err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate(%s) = %v, want a *ConfigError", tt.kind, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate(%s) = %v\nwant it to say %q", tt.kind, err, w)
				}
			}
		})
	}
}

// TestFlagWinsOverTheVariable: a flag the command line gave (bound with Changed) replaces the
// variable: its field holds the flag's value and the variable's bad value is not reported.
func TestFlagWinsOverTheVariable(t *testing.T) {
	t.Parallel()
	c, err := Load(t.Context(), envconfig.MapLookuper(map[string]string{"CIMDEPLOY_REPO": t.TempDir(), "CIMDEPLOY_TIMEOUT_BUILD": "0s"}))
	if err != nil {
		t.Fatal(err)
	}
	c.BuildTimeout = 10 * time.Minute // what --timeout-build 10m does
	c.BindFlag("CIMDEPLOY_TIMEOUT_BUILD", Flag{Name: "timeout-build", Changed: true})
	if err := c.Validate(pipeline.KindValidate); err != nil {
		t.Errorf("Validate = %v, want nil: the flag replaced the variable", err)
	}
}

func TestValidateCluster(t *testing.T) {
	t.Parallel()
	key, kh := sshFiles(t)
	c, err := Load(t.Context(), envconfig.MapLookuper(map[string]string{"CIMDEPLOY_REPO": t.TempDir(),
		"CIMDEPLOY_SSH_KEY_FILE": key, "CIMDEPLOY_SSH_KNOWN_HOSTS": kh, "CIMDEPLOY_LXC_BUILDER": "docker"}))
	if err != nil {
		t.Fatal(err)
	}
	// A cluster builds nothing: the LXC builder does not matter to it.
	if err := c.ValidateCluster(); err != nil {
		t.Errorf("ValidateCluster = %v", err)
	}
	c.Remote.KnownHosts = ""
	if err := c.ValidateCluster(); err == nil || !strings.Contains(err.Error(), "CIMDEPLOY_SSH_KNOWN_HOSTS") {
		t.Errorf("ValidateCluster without known_hosts = %v", err)
	}
}

// TestUseLab: the lab's settings fill what neither a variable nor a flag set, the user's variables
// and flags win, and the process environment is left alone.
func TestUseLab(t *testing.T) {
	t.Parallel()
	userKey, _ := sshFiles(t)
	c, err := Load(t.Context(), envconfig.MapLookuper(map[string]string{
		"CIMDEPLOY_SSH_KEY_FILE":        userKey,
		"CIMDEPLOY_PROXMOX_HOST":        "",
		"CIMDEPLOY_NIX_OVERRIDE_INPUTS": "nixpkgs=path:/srv/nixpkgs",
	}))
	if err != nil {
		t.Fatal(err)
	}
	c.Remote.Jump = "jump.example" // a flag
	lab := LabEnv{RepoDir: "/lab/repo", Env: map[string]string{
		"CIMDEPLOY_SSH_KEY_FILE":    "/lab/ssh/id_ed25519",
		"CIMDEPLOY_SSH_KNOWN_HOSTS": "/lab/ssh/known_hosts",
		"CIMDEPLOY_SSH_JUMP":        "lab-jump",
		"CIMDEPLOY_PROXMOX_HOST":    "127.0.0.10",
		"CIMDEPLOY_SECRETS_DIR":     "/lab/secrets",
	}}
	if err := c.UseLab(t.Context(), lab); err != nil {
		t.Fatal(err)
	}
	if c.Repo != "/lab/repo" || c.Rev != "main" || !c.Nix.Offline || c.Nix.OverrideInputs != nil {
		t.Errorf("repository and Nix after UseLab: %q %q offline=%t inputs=%v", c.Repo, c.Rev, c.Nix.Offline, c.Nix.OverrideInputs)
	}
	if c.Remote.KnownHosts != "/lab/ssh/known_hosts" || c.Rollout.SecretsDir != "/lab/secrets" {
		t.Errorf("known_hosts %q, secrets %q: want the lab's", c.Remote.KnownHosts, c.Rollout.SecretsDir)
	}
	if c.Remote.KeyFile != userKey || c.Remote.Jump != "jump.example" || c.Remote.ProxmoxHost != "" {
		t.Errorf("the user's settings were replaced: key %q, jump %q, Proxmox host %q", c.Remote.KeyFile, c.Remote.Jump, c.Remote.ProxmoxHost)
	}
	if v, ok := os.LookupEnv("CIMDEPLOY_SSH_KNOWN_HOSTS"); ok && v == "/lab/ssh/known_hosts" {
		t.Error("UseLab set a variable of the process")
	}
}
