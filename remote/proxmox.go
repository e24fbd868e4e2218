package remote

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Proxmox is what cimdeploy asks of a Proxmox host: templates and containers. PCT implements it with
// pct over SSH; the Proxmox REST API (token auth, multipart upload, task polling by UPID) can be a
// second implementation behind the same contract.
type Proxmox interface {
	// UploadTemplate puts a node's template on the host under its content-addressed name; an
	// unchanged template moves 0 bytes (see PCT.UploadTemplate).
	UploadTemplate(ctx context.Context, t Template) (Uploaded, error)
	// Status is the state of container vmid: ContainerMissing, ContainerStopped or ContainerRunning.
	Status(ctx context.Context, vmid int) (ContainerState, error)
	// EnsureContainer makes c exist and run: created from c.Template and started when missing,
	// started when stopped, left alone when running (its settings are never changed; differences
	// are reported as Drift). An existing container is destroyed only when c.Recreate is set. A
	// container it creates lets root in with the keys cimdeploy logs in with, and its host key, new
	// like every container made from a template, is learned over the Proxmox host and pinned in
	// known_hosts before the first SSH to it. When it starts the container, it waits until c.SSH
	// answers.
	EnsureContainer(ctx context.Context, c Container) (Ensured, error)
}

// Runner runs commands on one host; *Client is the SSH implementation.
type Runner interface {
	Run(ctx context.Context, cmd Cmd) error
}

// ContainerState is the state of a container.
type ContainerState string

// The container states.
const (
	ContainerMissing ContainerState = "missing"
	ContainerStopped ContainerState = "stopped"
	ContainerRunning ContainerState = "running"
)

// OSType is the --ostype of every container cimdeploy creates.
const OSType = "nixos"

// Container is a node's LXC container as Proxmox should run it.
type Container struct {
	VMID         int
	Hostname     string
	Cores        int
	MemoryMiB    int
	Storage      string       // the rootfs storage (local-lvm)
	Interface    string       // net0 name inside the container (eth0)
	Bridge       string       // vmbr0
	Address      netip.Prefix // 10.0.0.11/24
	Gateway      netip.Addr
	Unprivileged bool
	Features     []string // nesting=1, ...
	// RootfsGiB is the root disk's size (--rootfs Storage:RootfsGiB); 0: Proxmox's default (4).
	RootfsGiB int
	// OnBoot starts the container with its Proxmox host (--onboot 1).
	OnBoot bool
	// Template is the template volume to create from: Uploaded.Volume.
	Template string
	// SSHAddr is where cimdeploy reaches the container's sshd (host or host:port, as in Host.Addr),
	// the name whose known_hosts line a new container's host key replaces; empty: Address.
	SSHAddr string
	// SSH is the node's SSH, polled (`true`) until it answers after the container started; nil:
	// no wait.
	SSH Runner
	// Recreate destroys an existing container and creates it anew. Never set it by default: it
	// loses the container's state.
	Recreate bool
	// BeforeStart, when set, runs after pct create and before the first pct start (to put data kept
	// from the container it replaces into its rootfs: DataKeeper.RestoreData).
	BeforeStart func(ctx context.Context) error
}

var (
	storageID  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]*$`)
	bridgeName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	hostLabel  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	feature    = regexp.MustCompile(`^[a-z_]+=[A-Za-z0-9;]+$`)
	volumeID   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]*:vztmpl/[A-Za-z0-9][A-Za-z0-9_.-]*\.tar\.(xz|gz|zst)$`)
)

// Validate reports every setting of c that pct would reject or that could change the meaning of a
// pct option (a "," in a bridge name would add a net0 property).
func (c Container) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.VMID < 100 || c.VMID > 999999999 {
		bad("vmid %d: want 100 to 999999999", c.VMID)
	}
	if !hostLabel.MatchString(c.Hostname) {
		bad("hostname %q: want a DNS label", c.Hostname)
	}
	if c.Cores < 1 || c.Cores > 8192 {
		bad("cores %d: want 1 to 8192", c.Cores)
	}
	if c.MemoryMiB < 16 {
		bad("memory %d MiB: want at least 16", c.MemoryMiB)
	}
	if !storageID.MatchString(c.Storage) {
		bad("storage %q: want a storage id", c.Storage)
	}
	if !bridgeName.MatchString(c.Bridge) {
		bad("bridge %q: want an interface name", c.Bridge)
	}
	if !bridgeName.MatchString(c.Interface) {
		bad("interface %q: want an interface name", c.Interface)
	}
	if !c.Address.IsValid() || !c.Address.Addr().Is4() {
		bad("address %s: want an IPv4 address with its prefix length", c.Address)
	}
	if !c.Gateway.IsValid() || !c.Gateway.Is4() {
		bad("gateway %s: want an IPv4 address", c.Gateway)
	}
	for _, f := range c.Features {
		if !feature.MatchString(f) {
			bad("feature %q: want name=value", f)
		}
	}
	if c.RootfsGiB < 0 {
		bad("rootfs %d GiB: want a size, or 0 for Proxmox's default", c.RootfsGiB)
	}
	if !volumeID.MatchString(c.Template) {
		bad("template %q: want a volume such as local:vztmpl/nats-1-<sha256>.tar.xz", c.Template)
	}
	return errors.Join(errs...)
}

// createArgv is the pct create command of c.
func (c Container) createArgv() []string {
	argv := []string{"pct", "create", strconv.Itoa(c.VMID), c.Template,
		"--hostname", c.Hostname,
		"--cores", strconv.Itoa(c.Cores),
		"--memory", strconv.Itoa(c.MemoryMiB),
		"--storage", c.Storage,
		"--net0", fmt.Sprintf("name=%s,bridge=%s,ip=%s,gw=%s", c.Interface, c.Bridge, c.Address, c.Gateway),
		"--unprivileged", boolFlag(c.Unprivileged),
	}
	if len(c.Features) > 0 {
		argv = append(argv, "--features", strings.Join(c.Features, ","))
	}
	if c.RootfsGiB > 0 { // a new volume: STORAGE_ID:SIZE_IN_GiB (pct(1), --rootfs)
		argv = append(argv, "--rootfs", fmt.Sprintf("%s:%d", c.Storage, c.RootfsGiB))
	}
	if c.OnBoot {
		argv = append(argv, "--onboot", "1")
	}
	return append(argv, "--ostype", OSType)
}

func boolFlag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Ensured is what EnsureContainer did.
type Ensured struct {
	VMID      int      `json:"vmid"`
	Created   bool     `json:"created"`
	Recreated bool     `json:"recreated"`
	Started   bool     `json:"started"`
	Drift     []string `json:"drift,omitempty"` // settings of the existing container that differ from the wanted ones
	// HostKey is the SHA256 fingerprint of the host key of the container it created, now pinned in
	// known_hosts.
	HostKey  string        `json:"host_key,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// PCT is the Proxmox host driven by pct over SSH. It is safe for concurrent use with different
// containers.
type PCT struct {
	host           *Client
	storage        string
	dir            string
	bootTimeout    time.Duration
	cleanupTimeout time.Duration
	knownHosts     string
	port           int
	log            *slog.Logger
}

// NewPCT is the Proxmox host behind host (a Client of the Proxmox host), with the template storage and
// directory, the boot timeout and the known_hosts file of the pool's Config.
func NewPCT(host *Client) *PCT {
	cfg := host.pool.cfg
	return &PCT{host: host, storage: cfg.ProxmoxStorage, dir: cfg.TemplateDir, bootTimeout: cfg.BootTimeout,
		cleanupTimeout: cfg.ConnectTimeout + 20*time.Second, knownHosts: cfg.KnownHosts, port: cfg.Port, log: host.pool.log}
}

// ErrForeignContainer is an existing vmid whose container is not the one wanted (another hostname).
var ErrForeignContainer = errors.New("vmid belongs to another container")

// Status runs pct status vmid. A vmid without a container is ContainerMissing; any other pct failure
// is an error with pct's output verbatim.
func (p *PCT) Status(ctx context.Context, vmid int) (ContainerState, error) {
	st, err := p.status(ctx, vmid)
	if err != nil {
		return st, wrapErr(p.host.Name(), fmt.Sprintf("container %d status", vmid), err)
	}
	return st, nil
}

func (p *PCT) status(ctx context.Context, vmid int) (ContainerState, error) {
	out, err := p.host.Output(ctx, 4096, "pct", "status", strconv.Itoa(vmid))
	var ee *ExitError
	if errors.As(err, &ee) && strings.Contains(ee.Stderr, "does not exist") {
		return ContainerMissing, nil
	}
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(out))
	switch strings.TrimSpace(strings.TrimPrefix(s, "status:")) {
	case "running":
		return ContainerRunning, nil
	case "stopped":
		return ContainerStopped, nil
	}
	return "", fmt.Errorf("pct status %d: unexpected output %q", vmid, s)
}

// config is pct config vmid as key: value pairs.
func (p *PCT) config(ctx context.Context, vmid int) (map[string]string, error) {
	out, err := p.host.Output(ctx, 1<<20, "pct", "config", strconv.Itoa(vmid))
	if err != nil {
		return nil, err
	}
	conf := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(k, "#") {
			conf[k] = strings.TrimSpace(v)
		}
	}
	return conf, nil
}

// EnsureContainer implements Proxmox. pct failures carry pct's output (the task log) verbatim.
func (p *PCT) EnsureContainer(ctx context.Context, c Container) (Ensured, error) {
	start := time.Now()
	res, err := p.ensure(ctx, c)
	res.Duration = time.Since(start)
	if err != nil {
		return res, wrapErr(p.host.Name(), fmt.Sprintf("ensure container %d (%s)", c.VMID, c.Hostname), err)
	}
	p.log.Info("container ensured", "host", p.host.Name(), "vmid", c.VMID, "hostname", c.Hostname,
		"created", res.Created, "recreated", res.Recreated, "started", res.Started, "drift", res.Drift,
		"host_key", res.HostKey, "duration", res.Duration.Round(time.Millisecond))
	return res, nil
}

func (p *PCT) ensure(ctx context.Context, c Container) (Ensured, error) {
	res := Ensured{VMID: c.VMID}
	id := strconv.Itoa(c.VMID)
	if err := c.Validate(); err != nil {
		return res, err
	}
	st, err := p.status(ctx, c.VMID)
	if err != nil {
		return res, err
	}
	if st != ContainerMissing {
		conf, err := p.config(ctx, c.VMID)
		if err != nil {
			return res, err
		}
		if h := conf["hostname"]; h != c.Hostname {
			return res, fmt.Errorf("%w: container %s is %q, not %q; refusing to touch it", ErrForeignContainer, id, h, c.Hostname)
		}
		if !c.Recreate {
			res.Drift = drift(c, conf)
			if st == ContainerRunning {
				return res, nil
			}
			if err := p.pct(ctx, "start", id); err != nil {
				return res, err
			}
			res.Started = true
			return res, p.waitSSH(ctx, c)
		}
		if st == ContainerRunning {
			if err := p.pct(ctx, "stop", id); err != nil {
				return res, err
			}
		}
		if err := p.pct(ctx, "destroy", id); err != nil {
			return res, err
		}
		res.Recreated = true
	}
	keys, err := p.host.pool.AuthorizedKeys()
	if err != nil {
		return res, err
	}
	if err := p.host.Run(ctx, Cmd{Argv: Script(createScript, append([]string{string(keys)}, c.createArgv()...)...),
		Step: "pct create " + id}); err != nil {
		return res, err
	}
	res.Created = !res.Recreated
	if c.BeforeStart != nil {
		if err := c.BeforeStart(ctx); err != nil {
			return res, err
		}
	}
	if err := p.pct(ctx, "start", id); err != nil {
		return res, err
	}
	res.Started = true
	if res.HostKey, err = p.pinHostKey(ctx, c); err != nil {
		return res, err
	}
	return res, p.waitSSH(ctx, c)
}

// createScript runs pct create ($2...) with the authorized_keys lines $1 as --ssh-public-keys, which
// pct reads from a file on the Proxmox host (pct(1): "Setup public SSH keys (one key per line,
// OpenSSH format)"); Proxmox writes them to root's authorized_keys in the new container.
const createScript = `f=$(mktemp) || exit
printf '%s' "$1" >"$f" || { rm -f "$f"; exit 1; }
shift
"$@" --ssh-public-keys "$f"
rc=$?
rm -f "$f"
exit $rc`

// hostKeyFile is the container's ed25519 host key, the key cimdeploy's SSH client asks for.
const hostKeyFile = "/etc/ssh/ssh_host_ed25519_key.pub"

// pinHostKey learns the host key of the container c it just created over the channel already trusted,
// the Proxmox host (pct exec VMID -- cat the key), and pins it in known_hosts for c's SSH address,
// replacing whatever was known for that address. A container made from a template gets its keys at
// its first boot (NixOS's sshd generates missing ones when it starts), so the key is polled for up to
// the boot timeout. It returns the key's fingerprint.
func (p *PCT) pinHostKey(ctx context.Context, c Container) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.bootTimeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	id := strconv.Itoa(c.VMID)
	for {
		out, err := p.host.Output(ctx, 16<<10, "pct", "exec", id, "--", "cat", hostKeyFile)
		var ee *ExitError
		switch {
		case err == nil:
			key, _, _, _, perr := ssh.ParseAuthorizedKey(out)
			if perr != nil {
				return "", fmt.Errorf("container %s: %s: %w", id, hostKeyFile, perr)
			}
			addr := c.SSHAddr
			if addr == "" {
				addr = c.Address.Addr().String()
			}
			addr, err := hostPort(addr, p.port)
			if err != nil {
				return "", err
			}
			if err := PinHostKey(p.knownHosts, addr, key); err != nil {
				return "", err
			}
			fp := ssh.FingerprintSHA256(key)
			p.log.Info("host key of the new container pinned", "host", p.host.Name(), "vmid", c.VMID, "hostname", c.Hostname,
				"addr", addr, "key", fp, "known_hosts", p.knownHosts)
			return fp, nil
		case !errors.As(err, &ee):
			return "", err // not pct's answer: the Proxmox host's connection broke
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "", fmt.Errorf("no host key %s in container %s within %s (CIMDEPLOY_PROXMOX_BOOT_TIMEOUT): %w", hostKeyFile, id, p.bootTimeout, err)
			}
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

// pct runs pct verb vmid.
func (p *PCT) pct(ctx context.Context, verb, id string) error {
	return p.host.Run(ctx, Cmd{Argv: []string{"pct", verb, id}, Step: "pct " + verb + " " + id})
}

// drift lists the settings of an existing container's pct config that differ from c.
func drift(c Container, conf map[string]string) []string {
	var d []string
	check := func(key, want string) {
		if got, ok := conf[key]; ok && got != want {
			d = append(d, fmt.Sprintf("%s: %s, want %s", key, got, want))
		}
	}
	check("cores", strconv.Itoa(c.Cores))
	check("memory", strconv.Itoa(c.MemoryMiB))
	check("unprivileged", boolFlag(c.Unprivileged))
	check("ostype", OSType)
	if got := conf["onboot"]; (got == "1") != c.OnBoot {
		d = append(d, fmt.Sprintf("onboot: %s, want %s", cmp.Or(got, "0"), boolFlag(c.OnBoot)))
	}
	if len(c.Features) > 0 {
		check("features", strings.Join(c.Features, ","))
	}
	if net0, ok := conf["net0"]; ok {
		props := map[string]string{}
		for _, kv := range strings.Split(net0, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				props[k] = v
			}
		}
		for k, want := range map[string]string{"bridge": c.Bridge, "ip": c.Address.String(), "gw": c.Gateway.String()} {
			if got := props[k]; got != want {
				d = append(d, fmt.Sprintf("net0 %s: %s, want %s", k, got, want))
			}
		}
	}
	return d
}

// waitSSH polls c.SSH with `true` until it answers, up to the boot timeout. A host key the
// known_hosts file does not vouch for, or refused authentication, ends the wait at once.
func (p *PCT) waitSSH(ctx context.Context, c Container) error {
	if c.SSH == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.bootTimeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.SSH.Run(ctx, Cmd{Argv: []string{"true"}, Step: "ssh after boot", Stdout: io.Discard, Stderr: io.Discard})
		var hk *HostKeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &hk), errors.Is(err, ErrAuth):
			return err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("no SSH within %s (CIMDEPLOY_PROXMOX_BOOT_TIMEOUT): %w", p.bootTimeout, err)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}
