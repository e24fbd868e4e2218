package rollout

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sethvargo/go-envconfig"
)

// Config bounds every wait of a rolling switch; all of it is finite. Every field is a CIMDEPLOY_*
// variable (LoadConfig) and a flag of the commands that switch nodes.
type Config struct {
	// ConfirmTimeout is the dead-man timer: a node whose switch the controller has not confirmed
	// (disarmed) this long after arming switches back to its previous generation by itself. It has
	// to cover the activation and the gate.
	ConfirmTimeout time.Duration `env:"CIMDEPLOY_ROLLOUT_CONFIRM_TIMEOUT, default=5m"`
	// GateTimeout bounds the health gate after an activation. GatePoll is the longest pause between
	// its probes: the first comes at once, and each pause is an eighth of the time waited so far, at
	// least 5 ms, up to GatePoll (FirstPause, PauseFraction); a change the node's server announces (a
	// route formed) probes at once and starts the pauses over. A node is healthy again 0.05-0.8 s
	// after its activation, when the pauses are still short; a node that takes longer is probed
	// every GatePoll.
	GateTimeout time.Duration `env:"CIMDEPLOY_ROLLOUT_GATE_TIMEOUT, default=3m"`
	GatePoll    time.Duration `env:"CIMDEPLOY_ROLLOUT_GATE_POLL, default=250ms"`
	// SettleTimeout bounds the wait between two nodes for the whole cluster to settle (Settler):
	// every member healthy and every replicated stream led and caught up. A cluster that does not
	// settle halts the rollout there; the node before it passed its gate and stays switched.
	SettleTimeout time.Duration `env:"CIMDEPLOY_ROLLOUT_SETTLE_TIMEOUT, default=2m"`
	// PreflightTimeout bounds the health check of every node before any is touched.
	PreflightTimeout time.Duration `env:"CIMDEPLOY_ROLLOUT_PREFLIGHT_TIMEOUT, default=30s"`
	// ActivationTimeout bounds switch-to-configuration in its transient unit, waits for it included,
	// and every other command on a node once its switch has begun.
	ActivationTimeout time.Duration `env:"CIMDEPLOY_ROLLOUT_ACTIVATION_TIMEOUT, default=90s"`
	// ReconnectTimeout bounds the time without an SSH connection while an activation runs: the
	// controller reconnects and polls the unit's result until then.
	ReconnectTimeout time.Duration `env:"CIMDEPLOY_ROLLOUT_RECONNECT_TIMEOUT, default=1m"`
	// CopyTimeout bounds copying a node's closure.
	CopyTimeout time.Duration `env:"CIMDEPLOY_ROLLOUT_COPY_TIMEOUT, default=30m"`
	// HTTPTimeout bounds one request to a NATS monitoring endpoint or the system account.
	HTTPTimeout time.Duration `env:"CIMDEPLOY_ROLLOUT_HTTP_TIMEOUT, default=5s"`

	// SystemCredsFile is a credentials file of the NATS system account; with it (or SystemUser) the
	// gate also asks every server to answer $SYS.REQ.SERVER.PING, as `nats server ping` does.
	SystemCredsFile string `env:"CIMDEPLOY_ROLLOUT_SYSTEM_CREDS_FILE"`
	// SystemUser and the password in SystemPasswordFile are a system account user, instead of creds.
	SystemUser         string `env:"CIMDEPLOY_ROLLOUT_SYSTEM_USER"`
	SystemPasswordFile string `env:"CIMDEPLOY_ROLLOUT_SYSTEM_PASSWORD_FILE"`
	// SystemNkeyFile holds the nkey seed of a system account user (the user a SystemUserAdded event
	// names by its public key), instead of creds. A topology with accounts needs one of the three: its
	// servers refuse clients without a user, and the gate then always pings.
	SystemNkeyFile string `env:"CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE"`
	// NATSCAFile is the CA (PEM) the NATS servers' certificates are signed by, for a cluster whose
	// clients must use TLS (ClusterSecured client_tls): the gate's connections verify the servers with
	// it. Unset, the secrets directory's CA (SecretsDir/<node>/ca.pem) is used when there is one.
	NATSCAFile string `env:"CIMDEPLOY_ROLLOUT_NATS_CA_FILE"`

	// MaxParallel bounds the nodes switched at once across the rollout's groups (waves.go): different
	// NATS clusters go side by side, leaves and other roles in batches of at most this many.
	MaxParallel int `env:"CIMDEPLOY_ROLLOUT_MAX_PARALLEL, default=4"`
	// KeepGoing lets the groups that do not depend on a failed one go on to their end; without it they
	// finish the node in flight and stop.
	KeepGoing bool `env:"CIMDEPLOY_ROLLOUT_KEEP_GOING"`
	// FanOut: when the rollout copies the closures of at least this many nodes (0: never), the nodes
	// fetch what another node already holds from that node (remote.Fan: a key of the rollout's own,
	// allowed nix-store --serve only, every path checked against the controller's NAR hash), so a
	// closure most nodes share leaves the controller once or a few times, not once per node.
	FanOut int `env:"CIMDEPLOY_ROLLOUT_FAN_OUT, default=0"`

	// SecretsDir is the local directory of the nodes' secrets, <dir>/<node>/<file> (ca.pem, node.pem,
	// node-key.pem), installed on each node before its switch when the cluster is secured; a node
	// whose files are missing is refused before anything is switched. SecretsOwner owns them there.
	SecretsDir   string `env:"CIMDEPLOY_SECRETS_DIR"`
	SecretsOwner string `env:"CIMDEPLOY_SECRETS_OWNER, default=nats"`

	// Mode is how each switch activates its node (mode.go): switch (live, the new boot default),
	// test (live, the boot default unchanged: a canary) or boot (the new boot default, then the
	// container restarted).
	Mode Mode `env:"CIMDEPLOY_ROLLOUT_MODE, default=switch"`
}

// LoadConfig reads Config from the environment (lookup nil: the process environment) and validates it.
func LoadConfig(ctx context.Context, lookup envconfig.Lookuper) (Config, error) {
	if lookup == nil {
		lookup = envconfig.OsLookuper()
	}
	var c Config
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &c, Lookuper: lookup}); err != nil {
		return c, fmt.Errorf("rollout config: %w", err)
	}
	return c, c.Validate()
}

// settleTimeout is SettleTimeout, or GateTimeout for a Config made without it.
func (c Config) settleTimeout() time.Duration {
	if c.SettleTimeout > 0 {
		return c.SettleTimeout
	}
	return c.GateTimeout
}

// maxParallel is MaxParallel, or DefaultMaxParallel for a Config made without it.
func (c Config) maxParallel() int {
	if c.MaxParallel > 0 {
		return c.MaxParallel
	}
	return DefaultMaxParallel
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"CIMDEPLOY_ROLLOUT_CONFIRM_TIMEOUT", c.ConfirmTimeout},
		{"CIMDEPLOY_ROLLOUT_GATE_TIMEOUT", c.GateTimeout},
		{"CIMDEPLOY_ROLLOUT_GATE_POLL", c.GatePoll},
		{"CIMDEPLOY_ROLLOUT_SETTLE_TIMEOUT", c.SettleTimeout},
		{"CIMDEPLOY_ROLLOUT_PREFLIGHT_TIMEOUT", c.PreflightTimeout},
		{"CIMDEPLOY_ROLLOUT_ACTIVATION_TIMEOUT", c.ActivationTimeout},
		{"CIMDEPLOY_ROLLOUT_RECONNECT_TIMEOUT", c.ReconnectTimeout},
		{"CIMDEPLOY_ROLLOUT_COPY_TIMEOUT", c.CopyTimeout},
		{"CIMDEPLOY_ROLLOUT_HTTP_TIMEOUT", c.HTTPTimeout},
	} {
		if d.v <= 0 {
			bad("%s %s: want a positive duration (there is no \"forever\")", d.name, d.v)
		}
	}
	if c.ConfirmTimeout > 0 && c.ConfirmTimeout <= c.ActivationTimeout+c.GateTimeout {
		bad("CIMDEPLOY_ROLLOUT_CONFIRM_TIMEOUT %s must exceed the activation and gate timeouts together (%s + %s): "+
			"a node would roll itself back while its gate still runs", c.ConfirmTimeout, c.ActivationTimeout, c.GateTimeout)
	}
	if c.GatePoll > c.GateTimeout && c.GateTimeout > 0 {
		bad("CIMDEPLOY_ROLLOUT_GATE_POLL %s is longer than CIMDEPLOY_ROLLOUT_GATE_TIMEOUT %s", c.GatePoll, c.GateTimeout)
	}
	if c.FanOut < 0 || c.FanOut == 1 {
		bad("CIMDEPLOY_ROLLOUT_FAN_OUT (--fan-out) %d: want 0 (never) or a number of nodes of at least 2", c.FanOut)
	}
	if c.MaxParallel < 1 || c.MaxParallel > MaxMaxParallel {
		bad("CIMDEPLOY_ROLLOUT_MAX_PARALLEL (--max-parallel) %d: want a number of nodes between 1 and %d", c.MaxParallel, MaxMaxParallel)
	}
	if n := btoi(c.SystemCredsFile != "") + btoi(c.SystemUser != "") + btoi(c.SystemNkeyFile != ""); n > 1 {
		bad("CIMDEPLOY_ROLLOUT_SYSTEM_CREDS_FILE, CIMDEPLOY_ROLLOUT_SYSTEM_USER and CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE: set one")
	}
	if c.SystemNkeyFile != "" {
		if err := checkNkeyFile(c.SystemNkeyFile); err != nil {
			bad("CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE: %w", err)
		}
	}
	if c.SystemCredsFile != "" {
		if _, err := os.Stat(c.SystemCredsFile); err != nil {
			bad("CIMDEPLOY_ROLLOUT_SYSTEM_CREDS_FILE: %w", err)
		}
	}
	if (c.SystemUser == "") != (c.SystemPasswordFile == "") {
		bad("CIMDEPLOY_ROLLOUT_SYSTEM_USER and CIMDEPLOY_ROLLOUT_SYSTEM_PASSWORD_FILE go together")
	} else if c.SystemPasswordFile != "" {
		if _, err := os.Stat(c.SystemPasswordFile); err != nil {
			bad("CIMDEPLOY_ROLLOUT_SYSTEM_PASSWORD_FILE: %w", err)
		}
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		bad("CIMDEPLOY_ROLLOUT_MODE (--mode): %w", err)
	}
	if c.SecretsDir != "" {
		if st, err := os.Stat(c.SecretsDir); err != nil {
			bad("CIMDEPLOY_SECRETS_DIR: %w", err)
		} else if !st.IsDir() {
			bad("CIMDEPLOY_SECRETS_DIR %s: not a directory", c.SecretsDir)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("rollout config: %w", errors.Join(errs...))
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
