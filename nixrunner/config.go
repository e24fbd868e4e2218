package nixrunner

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// OfflineConfig is the nix.conf text cimdeploy runs nix with when no binary cache is reachable: flakes
// enabled, builds as the calling user, no sandbox, no substituters. It works with Nix 2.8 and newer.
const OfflineConfig = "experimental-features = nix-command flakes\n" +
	"build-users-group =\n" +
	"sandbox = false\n" +
	"substituters =\n"

// Defaults applied by New to the zero fields of a Config.
const (
	DefaultTimeout   = 30 * time.Minute
	DefaultKillGrace = 10 * time.Second
)

// Config says how nix is run. The zero value is usable: New fills in the defaults. Every field is also an
// environment variable (CIMDEPLOY_NIX_*), read with github.com/sethvargo/go-envconfig.
type Config struct {
	// Nix is the nix executable: a name looked up in PATH, a path, or a directory holding nix and nix-store.
	Nix string `env:"CIMDEPLOY_NIX_BIN, default=nix"`
	// Offline runs nix with OfflineConfig in NIX_CONFIG and --offline on every flake command: no binary
	// cache, no download, builds as the calling user without sandbox.
	Offline bool `env:"CIMDEPLOY_NIX_OFFLINE"`
	// ExtraConfig holds nix.conf lines appended to NIX_CONFIG after OfflineConfig, so they win over it.
	ExtraConfig string `env:"CIMDEPLOY_NIX_EXTRA_CONFIG"`
	// OverrideInputs maps a flake input name to the flake reference it is replaced with
	// (--override-input), e.g. nixpkgs -> path:/srv/nixpkgs. In the environment: "nixpkgs=path:/x,dep=path:/y".
	OverrideInputs map[string]string `env:"CIMDEPLOY_NIX_OVERRIDE_INPUTS, separator=="`
	// Builders are Nix remote builders (Nix's `builders` syntax, see Builders); empty: Nix's own
	// setting (nix.conf or NIX_CONFIG). Nix sends each derivation to a machine that accepts it and
	// copies the outputs back; with MaxJobs 0 nothing is built locally.
	Builders Builders `env:"CIMDEPLOY_NIX_BUILDERS"`
	// MaxJobs is Nix's max-jobs for builds on this machine: a number, "auto" (one per CPU), or 0 to
	// build only on Builders; empty: Nix's own setting.
	MaxJobs string `env:"CIMDEPLOY_NIX_MAX_JOBS"`
	// Timeout bounds every nix call (default 30m); a caller's shorter context deadline wins.
	Timeout time.Duration `env:"CIMDEPLOY_NIX_TIMEOUT, default=30m"`
	// KillGrace is how long a cancelled nix may take, after SIGTERM to its process group, to stop its
	// builders before the group gets SIGKILL (default 10s). Nix runs each builder in a session of its own,
	// so only nix itself can stop a builder: a SIGKILL too early leaves the builder running.
	KillGrace time.Duration `env:"CIMDEPLOY_NIX_KILL_GRACE, default=10s"`
}

// inputName is what Nix accepts as a flake input name, with '/' for nested inputs (a/b).
var inputName = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]*(/[a-zA-Z][a-zA-Z0-9_-]*)*$`)

// withDefaults returns c with the zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Nix == "" {
		c.Nix = "nix"
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.KillGrace == 0 {
		c.KillGrace = DefaultKillGrace
	}
	return c
}

// Validate reports every problem of c at once; zero fields are fine (they get defaults).
func (c Config) Validate() error {
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_NIX_TIMEOUT: %v is negative", c.Timeout))
	}
	if c.KillGrace < 0 {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_NIX_KILL_GRACE: %v is negative", c.KillGrace))
	}
	if err := c.Builders.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxJobs != "" && c.MaxJobs != "auto" {
		if v, err := strconv.Atoi(c.MaxJobs); err != nil || v < 0 {
			errs = append(errs, fmt.Errorf("CIMDEPLOY_NIX_MAX_JOBS: %q: want a number of at least 0, or auto", c.MaxJobs))
		}
	}
	if c.MaxJobs == "0" && len(c.Builders.entries()) == 0 {
		errs = append(errs, errors.New("CIMDEPLOY_NIX_MAX_JOBS 0 builds only on remote builders, and CIMDEPLOY_NIX_BUILDERS names none"))
	}
	for _, name := range sortedKeys(c.OverrideInputs) {
		if !inputName.MatchString(name) {
			errs = append(errs, fmt.Errorf("CIMDEPLOY_NIX_OVERRIDE_INPUTS: %q is not a flake input name", name))
		}
		if strings.TrimSpace(c.OverrideInputs[name]) == "" {
			errs = append(errs, fmt.Errorf("CIMDEPLOY_NIX_OVERRIDE_INPUTS: input %q has no flake reference", name))
		}
	}
	return errors.Join(errs...)
}

// nixConfig is the nix.conf text c adds to NIX_CONFIG.
func (c Config) nixConfig() string {
	conf := ""
	if c.Offline {
		conf = OfflineConfig
	}
	if len(c.Builders.entries()) > 0 {
		// The builders fetch what they can from their substituters instead of from this machine.
		conf += c.Builders.nixConf() + "builders-use-substitutes = true\n"
	}
	if c.MaxJobs != "" {
		conf += "max-jobs = " + c.MaxJobs + "\n"
	}
	if c.ExtraConfig != "" {
		conf += c.ExtraConfig
		if !strings.HasSuffix(conf, "\n") {
			conf += "\n"
		}
	}
	return conf
}

// Environ returns env (os.Environ() when nil) with NIX_CONFIG extended by extra nix.conf lines.
// Settings given later win, so extra overrides what the user's NIX_CONFIG says.
func Environ(env []string, extra string) []string {
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+1)
	current := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "NIX_CONFIG="); ok {
			current = v
			continue
		}
		out = append(out, kv)
	}
	if current != "" && !strings.HasSuffix(current, "\n") {
		current += "\n"
	}
	return append(out, "NIX_CONFIG="+current+extra)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
