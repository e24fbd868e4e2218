package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

func addNixFlags(f *pflag.FlagSet, c *nixrunner.Config) {
	f.StringVar(&c.Nix, "nix", c.Nix, "nix executable or the directory holding it [CIMDEPLOY_NIX_BIN]")
	f.BoolVar(&c.Offline, "nix-offline", c.Offline, "no binary caches, no downloads [CIMDEPLOY_NIX_OFFLINE]")
	f.Var(&mapValue{m: &c.OverrideInputs}, "override-input", "input=flakeref, repeatable: replace a flake input [CIMDEPLOY_NIX_OVERRIDE_INPUTS]")
	f.StringVar((*string)(&c.Builders), "builders", string(c.Builders), "Nix remote builders, in the syntax of Nix's builders setting (URI SYSTEMS KEY JOBS SPEED FEATURES MANDATORY HOSTKEY; ...) [CIMDEPLOY_NIX_BUILDERS]")
	f.StringVar(&c.MaxJobs, "max-jobs", c.MaxJobs, "Nix's max-jobs here: a number, auto, or 0 to build only on --builders [CIMDEPLOY_NIX_MAX_JOBS]")
	f.DurationVar(&c.Timeout, "nix-timeout", c.Timeout, "bound on every nix call [CIMDEPLOY_NIX_TIMEOUT]")
}

func addStoreFlags(f *pflag.FlagSet, c *store.Config) {
	f.StringVar(&c.DataDir, "data-dir", c.DataDir, "state directory: embedded NATS, cached clones, workspaces, logs [CIMDEPLOY_DATA_DIR]")
	f.StringVar(&c.URL, "nats-url", c.URL, "external NATS cluster instead of the embedded server [CIMDEPLOY_NATS_URL]")
	f.StringVar(&c.CredsFile, "nats-creds-file", c.CredsFile, "credentials file for --nats-url [CIMDEPLOY_NATS_CREDS_FILE]")
	f.StringVar(&c.NkeyFile, "nats-nkey-file", c.NkeyFile, "nkey seed of a user of --nats-url, instead of credentials [CIMDEPLOY_NATS_NKEY_FILE]")
	f.StringVar(&c.CAFile, "nats-store-ca-file", c.CAFile, "CA of --nats-url's certificates, for servers that require TLS [CIMDEPLOY_NATS_CA_FILE]")
}

// mapValue is a repeatable name=value flag.
type mapValue struct{ m *map[string]string }

func (v *mapValue) String() string {
	if v.m == nil || *v.m == nil {
		return ""
	}
	keys := make([]string, 0, len(*v.m))
	for k := range *v.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + (*v.m)[k]
	}
	return strings.Join(parts, ",")
}

func (v *mapValue) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q is not name=value", s)
	}
	if *v.m == nil {
		*v.m = map[string]string{}
	}
	(*v.m)[name] = value
	return nil
}

func (v *mapValue) Type() string { return "name=ref" }

// addRemoteFlags adds the SSH, Proxmox and closure copy settings most often set by hand; all of
// remote.Config is read from its CIMDEPLOY_* variables.
func addRemoteFlags(f *pflag.FlagSet, c *remote.Config) {
	addSSHFlags(f, c)
	f.StringVar(&c.ProxmoxHost, "proxmox-host", c.ProxmoxHost, "the Proxmox host: templates and new containers [CIMDEPLOY_PROXMOX_HOST]")
	f.StringVar(&c.ProxmoxStorage, "proxmox-storage", c.ProxmoxStorage, "storage templates are uploaded to [CIMDEPLOY_PROXMOX_STORAGE]")
	f.StringVar(&c.ClosureCopy, "closure-copy", c.ClosureCopy, "export or nix-copy [CIMDEPLOY_CLOSURE_COPY]")
}

// addSSHFlags adds how the nodes are reached: the commands that neither copy closures nor create
// containers (rollback, generations) need no more.
func addSSHFlags(f *pflag.FlagSet, c *remote.Config) {
	f.StringVar(&c.User, "ssh-user", c.User, "login user on nodes and the Proxmox host [CIMDEPLOY_SSH_USER]")
	f.IntVar(&c.Port, "ssh-port", c.Port, "SSH port of hosts whose address names none [CIMDEPLOY_SSH_PORT]")
	f.StringVar(&c.KeyFile, "ssh-key-file", c.KeyFile, "private key to log in with [CIMDEPLOY_SSH_KEY_FILE]")
	f.StringVar(&c.KnownHosts, "ssh-known-hosts", c.KnownHosts, "known_hosts file; hosts not in it are refused [CIMDEPLOY_SSH_KNOWN_HOSTS]")
	f.StringVar(&c.Jump, "ssh-jump", c.Jump, "[user@]host[:port] to reach the nodes through [CIMDEPLOY_SSH_JUMP]")
	f.DurationVar(&c.ConnectTimeout, "ssh-connect-timeout", c.ConnectTimeout, "bound on connecting to a host [CIMDEPLOY_SSH_CONNECT_TIMEOUT]")
}

// addRolloutFlags adds the rolling switch's settings: timeouts, the system account, --force (a flag
// only, never the environment) and --revert-all.
func addRolloutFlags(f *pflag.FlagSet, cfg *deploy.Config, force *bool) {
	c := &cfg.Rollout
	f.DurationVar(&c.ConfirmTimeout, "confirm-timeout", c.ConfirmTimeout, "dead-man timer: a node not confirmed this long after its switch began rolls itself back [CIMDEPLOY_ROLLOUT_CONFIRM_TIMEOUT]")
	f.DurationVar(&c.GateTimeout, "gate-timeout", c.GateTimeout, "how long a switched node may take to be healthy and clustered [CIMDEPLOY_ROLLOUT_GATE_TIMEOUT]")
	f.DurationVar(&c.GatePoll, "gate-poll", c.GatePoll, "longest pause between health probes (they start at 5ms and grow) [CIMDEPLOY_ROLLOUT_GATE_POLL]")
	f.DurationVar(&c.SettleTimeout, "settle-timeout", c.SettleTimeout, "how long the cluster may take to settle (every member healthy, every stream caught up) before the next node [CIMDEPLOY_ROLLOUT_SETTLE_TIMEOUT]")
	f.DurationVar(&c.PreflightTimeout, "preflight-timeout", c.PreflightTimeout, "how long every node may take to be healthy before any is touched [CIMDEPLOY_ROLLOUT_PREFLIGHT_TIMEOUT]")
	f.DurationVar(&c.ActivationTimeout, "activation-timeout", c.ActivationTimeout, "bound on switch-to-configuration and every command of a switch [CIMDEPLOY_ROLLOUT_ACTIVATION_TIMEOUT]")
	f.DurationVar(&c.ReconnectTimeout, "reconnect-timeout", c.ReconnectTimeout, "how long an activation may go without an SSH connection [CIMDEPLOY_ROLLOUT_RECONNECT_TIMEOUT]")
	f.DurationVar(&c.CopyTimeout, "copy-timeout", c.CopyTimeout, "bound on copying a closure or creating a container [CIMDEPLOY_ROLLOUT_COPY_TIMEOUT]")
	f.DurationVar(&c.HTTPTimeout, "nats-http-timeout", c.HTTPTimeout, "bound on one NATS monitoring request [CIMDEPLOY_ROLLOUT_HTTP_TIMEOUT]")
	f.StringVar(&c.SystemCredsFile, "system-creds-file", c.SystemCredsFile, "NATS system account credentials: the gate also pings every server [CIMDEPLOY_ROLLOUT_SYSTEM_CREDS_FILE]")
	addSystemNkeyFlag(f, c)
	f.StringVar(&c.SecretsDir, "secrets-dir", c.SecretsDir, "directory of the nodes' TLS secrets, <dir>/<node>/{ca.pem,node.pem,node-key.pem}, installed before each switch [CIMDEPLOY_SECRETS_DIR]")
	if force != nil { // a person's decision: serve has none
		f.BoolVar(force, "force", false, "switch even nodes switched by hand, a commit that failed before, or an unhealthy cluster")
	}
	f.BoolVar(&cfg.RevertAll, "revert-all", cfg.RevertAll, "when a node fails, also revert the nodes already switched [CIMDEPLOY_ROLLOUT_REVERT_ALL]")
	f.IntVar(&c.MaxParallel, "max-parallel", c.MaxParallel, "most nodes switched at once: NATS clusters side by side, leaves and other roles in batches (each cluster still one member at a time) [CIMDEPLOY_ROLLOUT_MAX_PARALLEL]")
	f.IntVar(&c.FanOut, "fan-out", c.FanOut, "when the closures of at least this many nodes are copied, nodes fetch what another node already holds from it, checked against the local store's hashes (0: never) [CIMDEPLOY_ROLLOUT_FAN_OUT]")
	f.BoolVar(&c.KeepGoing, "keep-going", c.KeepGoing, "when a group of nodes fails, let the groups that do not depend on it go on to their end [CIMDEPLOY_ROLLOUT_KEEP_GOING]")
}

// addRepoFlags adds the infrastructure repository, its revision (not when rev is empty: serve takes
// it from each delivery), its events directory and its credentials; repo and rev say what they are for.
func addRepoFlags(f *pflag.FlagSet, c *deploy.Config, repo, rev string) {
	f.StringVar(&c.Repo, "repo", c.Repo, repo+" [CIMDEPLOY_REPO]")
	if rev != "" {
		f.StringVar(&c.Rev, "rev", c.Rev, rev+" [CIMDEPLOY_REV]")
	}
	f.StringVar(&c.Events, "events", c.Events, "events directory inside the repository [CIMDEPLOY_EVENTS]")
	f.StringVar(&c.GitTokenFile, "git-token-file", c.GitTokenFile, "file holding an HTTPS token for the repository [CIMDEPLOY_GIT_TOKEN_FILE]")
	f.StringVar(&c.GitSSHKeyFile, "git-ssh-key-file", c.GitSSHKeyFile, "SSH key for an ssh:// repository [CIMDEPLOY_GIT_SSH_KEY_FILE]")
	f.StringVar(&c.GitKnownHosts, "git-known-hosts", c.GitKnownHosts, "known_hosts for an ssh:// repository [CIMDEPLOY_GIT_KNOWN_HOSTS]")
}

// addLabFlags adds --lab (what it does for the command in usage) and --lab-dir.
func addLabFlags(f *pflag.FlagSet, c *deploy.Config, usage string) {
	f.BoolVar(&c.Lab, "lab", false, usage)
	f.StringVar(&c.LabDir, "lab-dir", c.LabDir, "the lab's directory, with --lab [CIMDEPLOY_LAB_DIR]")
}

// addSystemNkeyFlag adds --system-nkey-file once (the cluster's and the rollout's flags both want it):
// every command that opens the cluster needs it once the events define NATS accounts.
func addSystemNkeyFlag(f *pflag.FlagSet, c *rollout.Config) {
	if f.Lookup("system-nkey-file") != nil {
		return
	}
	f.StringVar(&c.SystemNkeyFile, "system-nkey-file", c.SystemNkeyFile, "nkey seed of a NATS system account user: the gate also pings every server; needed once the events define accounts [CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE]")
	f.StringVar(&c.NATSCAFile, "nats-ca-file", c.NATSCAFile, "CA of the NATS servers' certificates, when their clients must use TLS (ClusterSecured client_tls); default: the secrets directory's [CIMDEPLOY_ROLLOUT_NATS_CA_FILE]")
}
