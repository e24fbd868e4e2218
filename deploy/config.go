// Package deploy assembles runs: it loads the configuration once (Load), checks it (Validate), and
// puts the stages of a validate or deploy run together over one state store (New, Deployer.Run). The
// commands that act on the deployed cluster outside a run (rollback, generations) reach it through
// OpenCluster. The CLI (cmd/cimdeploy) and a long-running server both assemble runs here; neither
// reads the environment on its own.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// Config is everything a run needs to know: the repository, the build, the stages' timeouts, Nix,
// the state store, SSH and Proxmox, the rollout. Every field with an env tag is a CIMDEPLOY_*
// variable, read once by Load; the CLI binds its flags to the fields afterwards, so flags win.
// Settings of another part (a forge's status reporter, say) join as one more sub-config field with
// its own env tags: Load reads nested structs.
type Config struct {
	// Repo is the infrastructure repository: a local path or a URL (https, ssh, file).
	Repo string `env:"CIMDEPLOY_REPO"`
	// Rev is the revision a run of the CLI takes (a server takes it from the event).
	Rev            string `env:"CIMDEPLOY_REV, default=main"`
	Events         string `env:"CIMDEPLOY_EVENTS, default=events"`
	LXCBuilder     string `env:"CIMDEPLOY_LXC_BUILDER, default=nixpkgs"`
	GitTokenFile   string `env:"CIMDEPLOY_GIT_TOKEN_FILE"`
	GitSSHKeyFile  string `env:"CIMDEPLOY_GIT_SSH_KEY_FILE"`
	GitKnownHosts  string `env:"CIMDEPLOY_GIT_KNOWN_HOSTS"`
	AllowForcePush bool   `env:"CIMDEPLOY_ALLOW_FORCE_PUSH"`
	KeepWorkspace  bool   `env:"CIMDEPLOY_KEEP_WORKSPACE"`
	// BuildWorkers bounds the concurrent builds; 0: the CPUs, bounded by memory.
	BuildWorkers  int   `env:"CIMDEPLOY_BUILD_WORKERS"`
	EvalMemoryMiB int64 `env:"CIMDEPLOY_BUILD_MEMORY_PER_EVAL_MIB, default=512"`

	CheckoutTimeout time.Duration `env:"CIMDEPLOY_TIMEOUT_CHECKOUT, default=5m"`
	GenerateTimeout time.Duration `env:"CIMDEPLOY_TIMEOUT_GENERATE, default=1m"`
	CheckTimeout    time.Duration `env:"CIMDEPLOY_TIMEOUT_CHECK, default=30m"`
	BuildTimeout    time.Duration `env:"CIMDEPLOY_TIMEOUT_BUILD, default=1h"`
	CleanupTimeout  time.Duration `env:"CIMDEPLOY_TIMEOUT_CLEANUP, default=1m"`
	PublishTimeout  time.Duration `env:"CIMDEPLOY_TIMEOUT_PUBLISH, default=30m"`
	RolloutTimeout  time.Duration `env:"CIMDEPLOY_TIMEOUT_ROLLOUT, default=2h"`

	Nix     nixrunner.Config
	Store   store.Config
	Remote  remote.Config
	Rollout rollout.Config
	// RevertAll also reverts the nodes already switched when a node fails.
	RevertAll bool `env:"CIMDEPLOY_ROLLOUT_REVERT_ALL"`

	// TrustedSigners, when set, is a file of SSH allowed signers and/or OpenPGP public keys: a deploy
	// run refuses a commit whose signature does not verify against it (stage verify, after checkout).
	TrustedSigners string `env:"CIMDEPLOY_TRUSTED_SIGNERS"`
	// RequireApproval holds a deploy run after build and publish (stage approve) until an operator
	// approves or rejects it; ApprovalTimeout bounds the wait.
	RequireApproval bool          `env:"CIMDEPLOY_REQUIRE_APPROVAL"`
	ApprovalTimeout time.Duration `env:"CIMDEPLOY_APPROVAL_TIMEOUT, default=1h"`

	// Lab points the run at the local lab (UseLab); LabDir is the lab's directory.
	Lab    bool
	LabDir string `env:"CIMDEPLOY_LAB_DIR, default=.cimdeploy/lab"`

	// lookup is where Load read the variables; the checks of Validate and UseLab read it again.
	lookup envconfig.Lookuper
	// flags are the command-line flags bound to variables (BindFlag).
	flags map[string]Flag
}

// Flag is a command-line flag bound to a variable of Config.
type Flag struct {
	// Name is the flag's name without dashes (timeout-build).
	Name string
	// Changed is true when the command line gave the flag: its value replaced the variable's.
	Changed bool
}

// Load reads Config from lookup (nil: the process environment), once. It does not validate: bind the
// flags, then call Validate. A malformed variable (a duration that does not parse) is a *ConfigError.
func Load(ctx context.Context, lookup envconfig.Lookuper) (Config, error) {
	if lookup == nil {
		lookup = envconfig.OsLookuper()
	}
	c := Config{lookup: lookup}
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &c, Lookuper: lookup}); err != nil {
		return c, &ConfigError{Err: nameVariable(err, lookup)}
	}
	return c, nil
}

// nameVariable turns go-envconfig's error, which names the struct field ("Remote: Port: strconv...")
// into one that names the variable and its value: `CIMDEPLOY_SSH_PORT="x": strconv...`.
func nameVariable(err error, lookup envconfig.Lookuper) error {
	t, cur, msg := reflect.TypeOf(Config{}), err, err.Error()
	for {
		name, rest, ok := strings.Cut(msg, ": ")
		f, found := t.FieldByName(name)
		inner := errors.Unwrap(cur)
		if !ok || !found || inner == nil {
			return err
		}
		if tag, ok := f.Tag.Lookup("env"); ok {
			variable, _, _ := strings.Cut(tag, ",")
			variable = strings.TrimSpace(variable)
			raw, _ := lookup.Lookup(variable)
			return fmt.Errorf("%s=%q: %w", variable, raw, inner)
		}
		if f.Type.Kind() != reflect.Struct {
			return err
		}
		t, cur, msg = f.Type, inner, rest
	}
}

// BindFlag records that the command-line flag f sets variable: a problem of the variable names the
// flag too, and a flag the command line gave replaces the variable (its value is checked by the
// command line, not again by Validate).
func (c *Config) BindFlag(variable string, f Flag) {
	if c.flags == nil {
		c.flags = map[string]Flag{}
	}
	c.flags[variable] = f
}

// ConfigError is a setting that is missing, malformed or out of range: the user's to fix, not the
// infrastructure's. Every error Validate returns is one.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// configError wraps err as a *ConfigError (nil stays nil).
func configError(err error) error {
	if err == nil {
		return nil
	}
	return &ConfigError{Err: err}
}

// Validate checks every setting a run of kind needs, before the first stage: the revision, the
// repository and its credentials, the state store, Nix, the LXC builder, numbers that are zero or
// negative; for a deploy run also SSH and the rollout. Every problem it reports is a *ConfigError.
func (c *Config) Validate(kind pipeline.Kind) error {
	errs := []error{c.validateSource()}
	if err := c.Store.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Nix.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.LXCBuilder != projection.LXCNixpkgs && c.LXCBuilder != projection.LXCNixosGenerators {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_LXC_BUILDER (--lxc-builder) %q: want %s or %s", c.LXCBuilder, projection.LXCNixpkgs, projection.LXCNixosGenerators))
	}
	errs = append(errs, c.checkPositive()...)
	if kind == pipeline.KindDeploy {
		errs = append(errs, c.validateNodes())
	}
	return configError(errors.Join(errs...))
}

// ValidateCluster checks what OpenCluster needs: the revision, the repository, the state store, SSH
// and the rollout.
func (c *Config) ValidateCluster() error {
	errs := []error{c.validateSource()}
	if err := c.Store.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.checkPositive()...)
	errs = append(errs, c.validateNodes())
	return configError(errors.Join(errs...))
}

func (c *Config) validateSource() error {
	if c.Repo == "" {
		return errors.New("no repository: set CIMDEPLOY_REPO (--repo) to a local path or a URL")
	}
	if err := checkout.ValidateRev(c.Rev); err != nil {
		return err
	}
	_, err := c.Source()
	return err
}

// validateNodes checks what reaching the nodes needs: SSH and the rollout's settings.
func (c *Config) validateNodes() error {
	var errs []error
	if err := c.Remote.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("deploying needs SSH to the nodes: %w", err))
	}
	if err := c.Rollout.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Source is the infrastructure repository with its credentials; the token is read from its file.
func (c *Config) Source() (checkout.Source, error) {
	src := checkout.Source{URL: c.Repo, SSHKeyFile: c.GitSSHKeyFile, KnownHostsFile: c.GitKnownHosts}
	if c.GitTokenFile != "" {
		tok, err := os.ReadFile(c.GitTokenFile)
		if err != nil {
			return src, configError(fmt.Errorf("git token: %w", err))
		}
		src.Token = strings.TrimSpace(string(tok))
	}
	if err := src.Validate(); err != nil {
		return src, configError(err)
	}
	return src, nil
}

// LabEnv is what a run on the local lab takes from it: its repository and the settings `cimdeploy lab
// env` prints (fixtures/lab's Lab.Env), by variable.
type LabEnv struct {
	RepoDir string
	Env     map[string]string
}

// UseLab points c at the lab: its repository at main, offline Nix with the lab repository's own
// flake.lock (no input overrides, so the flake keeps its revision and every generation names its
// commit), and, for the SSH and Proxmox settings neither a variable nor a flag set, the lab's. The
// process environment is not changed.
func (c *Config) UseLab(ctx context.Context, l LabEnv) error {
	c.Repo, c.Rev = l.RepoDir, "main"
	c.Nix.Offline = true
	c.Nix.OverrideInputs = nil
	lookup := c.lookup
	if lookup == nil {
		lookup = envconfig.OsLookuper()
	}
	// Fields already set (by a variable, a flag or a default) keep their value; a variable set to
	// the empty string is set, and the lab does not replace it.
	both := envconfig.MultiLookuper(lookup, envconfig.MapLookuper(l.Env))
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &c.Remote, Lookuper: both}); err != nil {
		return configError(fmt.Errorf("the lab's SSH settings: %w", err))
	}
	// The lab's events define accounts: its system user authenticates the gate, unless one is set.
	if r := &c.Rollout; r.SystemNkeyFile == "" && r.SystemCredsFile == "" && r.SystemUser == "" {
		r.SystemNkeyFile = l.Env["CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE"]
	}
	if c.Rollout.SecretsDir == "" { // the lab's TLS secrets, installed on the nodes before each switch
		c.Rollout.SecretsDir = l.Env["CIMDEPLOY_SECRETS_DIR"]
	}
	return nil
}
