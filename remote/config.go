package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"
)

// Config is how cimdeploy reaches its machines. Every field has a CIMDEPLOY_* variable (LoadConfig);
// Validate checks it before the first connection.
type Config struct {
	// User is the login user on every host.
	User string `env:"CIMDEPLOY_SSH_USER, default=root"`
	// Port is the SSH port of hosts whose address names none.
	Port int `env:"CIMDEPLOY_SSH_PORT, default=22"`
	// KeyFile is the private key to log in with; KeyPassphraseFile holds its passphrase, if any.
	KeyFile           string `env:"CIMDEPLOY_SSH_KEY_FILE"`
	KeyPassphraseFile string `env:"CIMDEPLOY_SSH_KEY_PASSPHRASE_FILE"`
	// Agent, when true, also offers the keys of the ssh-agent at AgentSocket ($SSH_AUTH_SOCK).
	Agent       bool   `env:"CIMDEPLOY_SSH_AGENT, default=false"`
	AgentSocket string `env:"SSH_AUTH_SOCK"`
	// KnownHosts is the known_hosts file host keys are checked against; hosts not in it are refused.
	KnownHosts string `env:"CIMDEPLOY_SSH_KNOWN_HOSTS"`
	// ConnectTimeout bounds TCP connect, SSH handshake and authentication of one connection.
	ConnectTimeout time.Duration `env:"CIMDEPLOY_SSH_CONNECT_TIMEOUT, default=10s"`
	// Keepalive is the interval of keepalive@openssh.com requests on an idle or busy connection; a
	// connection that leaves KeepaliveMax of them in a row unanswered is closed as dead.
	Keepalive    time.Duration `env:"CIMDEPLOY_SSH_KEEPALIVE, default=15s"`
	KeepaliveMax int           `env:"CIMDEPLOY_SSH_KEEPALIVE_MAX, default=3"`
	// MaxSessions bounds the commands running at once on one connection (sshd's MaxSessions is 10).
	MaxSessions int `env:"CIMDEPLOY_SSH_MAX_SESSIONS, default=8"`
	// Jump is the host ([user@]host[:port]) the nodes are reached through, often the Proxmox host;
	// empty means direct connections.
	Jump string `env:"CIMDEPLOY_SSH_JUMP"`

	// ProxmoxHost is the Proxmox host's address (host or host:port).
	ProxmoxHost string `env:"CIMDEPLOY_PROXMOX_HOST"`
	// ProxmoxStorage is the storage templates are uploaded to; TemplateDir is its template
	// directory (for a "dir" storage at PATH: PATH/template/cache).
	ProxmoxStorage string `env:"CIMDEPLOY_PROXMOX_STORAGE, default=local"`
	TemplateDir    string `env:"CIMDEPLOY_PROXMOX_TEMPLATE_DIR, default=/var/lib/vz/template/cache"`
	// BootTimeout bounds the wait for a new container's SSH after pct start.
	BootTimeout time.Duration `env:"CIMDEPLOY_PROXMOX_BOOT_TIMEOUT, default=2m"`

	// ClosureCopy is how closures reach nodes: "export" (nix-store --export into nix-store --import
	// over this package's SSH connection) or "nix-copy" (nix copy --to ssh-ng://, which starts its own
	// OpenSSH client with the same key, known_hosts and jump host).
	ClosureCopy string `env:"CIMDEPLOY_CLOSURE_COPY, default=export"`
}

// The ClosureCopy methods.
const (
	CopyExport = "export"
	CopyNix    = "nix-copy"
)

// LoadConfig reads Config from the environment (lookup nil: the process environment) and validates it.
func LoadConfig(ctx context.Context, lookup envconfig.Lookuper) (Config, error) {
	if lookup == nil {
		lookup = envconfig.OsLookuper()
	}
	var c Config
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &c, Lookuper: lookup}); err != nil {
		return c, fmt.Errorf("remote config: %w", err)
	}
	return c, c.Validate()
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.User == "" {
		bad("CIMDEPLOY_SSH_USER is empty")
	}
	if c.Port < 1 || c.Port > 65535 {
		bad("CIMDEPLOY_SSH_PORT %d: want 1 to 65535", c.Port)
	}
	if c.KeyFile == "" && !c.Agent {
		bad("no SSH identity: set CIMDEPLOY_SSH_KEY_FILE or CIMDEPLOY_SSH_AGENT=true")
	}
	if c.KeyFile != "" {
		if _, err := os.Stat(c.KeyFile); err != nil {
			bad("CIMDEPLOY_SSH_KEY_FILE: %w", err)
		}
	}
	if c.KeyPassphraseFile != "" && c.KeyFile == "" {
		bad("CIMDEPLOY_SSH_KEY_PASSPHRASE_FILE without CIMDEPLOY_SSH_KEY_FILE")
	}
	if c.Agent && c.AgentSocket == "" {
		bad("CIMDEPLOY_SSH_AGENT=true but SSH_AUTH_SOCK is not set")
	}
	if c.KnownHosts == "" {
		bad("CIMDEPLOY_SSH_KNOWN_HOSTS is empty: host keys are always checked")
	} else if _, err := os.Stat(c.KnownHosts); err != nil {
		bad("CIMDEPLOY_SSH_KNOWN_HOSTS: %w", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"CIMDEPLOY_SSH_CONNECT_TIMEOUT", c.ConnectTimeout},
		{"CIMDEPLOY_SSH_KEEPALIVE", c.Keepalive},
		{"CIMDEPLOY_PROXMOX_BOOT_TIMEOUT", c.BootTimeout},
	} {
		if d.v <= 0 {
			bad("%s %s: want a positive duration (there is no \"forever\")", d.name, d.v)
		}
	}
	if c.KeepaliveMax < 1 {
		bad("CIMDEPLOY_SSH_KEEPALIVE_MAX %d: want at least 1", c.KeepaliveMax)
	}
	if c.MaxSessions < 1 {
		bad("CIMDEPLOY_SSH_MAX_SESSIONS %d: want at least 1", c.MaxSessions)
	}
	if c.Jump != "" {
		if _, _, err := splitUserHost(c.Jump, c.User, c.Port); err != nil {
			bad("CIMDEPLOY_SSH_JUMP: %w", err)
		}
	}
	if c.ProxmoxHost != "" {
		if _, err := hostPort(c.ProxmoxHost, c.Port); err != nil {
			bad("CIMDEPLOY_PROXMOX_HOST: %w", err)
		}
	}
	if !storageID.MatchString(c.ProxmoxStorage) {
		bad("CIMDEPLOY_PROXMOX_STORAGE %q: want a storage id such as local", c.ProxmoxStorage)
	}
	if !path.IsAbs(c.TemplateDir) {
		bad("CIMDEPLOY_PROXMOX_TEMPLATE_DIR %q: want an absolute path", c.TemplateDir)
	}
	if c.ClosureCopy != CopyExport && c.ClosureCopy != CopyNix {
		bad("CIMDEPLOY_CLOSURE_COPY %q: want %s or %s", c.ClosureCopy, CopyExport, CopyNix)
	}
	if len(errs) > 0 {
		return fmt.Errorf("remote config: %w", errors.Join(errs...))
	}
	return nil
}

// hostPort is addr with port def when it names none: "10.0.0.1" -> "10.0.0.1:22", "[::1]:2222" stays.
func hostPort(addr string, def int) (string, error) {
	if addr == "" {
		return "", errors.New("empty address")
	}
	if h, p, err := net.SplitHostPort(addr); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || h == "" {
			return "", fmt.Errorf("address %q: bad host or port", addr)
		}
		return addr, nil
	}
	if strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]") {
		addr = addr[1 : len(addr)-1]
	}
	if strings.ContainsAny(addr, " \t\n/@[]") {
		return "", fmt.Errorf("address %q: want host or host:port", addr)
	}
	return net.JoinHostPort(addr, strconv.Itoa(def)), nil
}

// splitUserHost parses [user@]host[:port].
func splitUserHost(s, defUser string, defPort int) (user, addr string, err error) {
	user = defUser
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		user, s = s[:i], s[i+1:]
		if user == "" {
			return "", "", fmt.Errorf("%q: empty user", s)
		}
	}
	addr, err = hostPort(s, defPort)
	return user, addr, err
}
