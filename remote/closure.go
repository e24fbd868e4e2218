package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Node is a NixOS node as cimdeploy deploys it: commands, and closures from the local Nix store.
type Node interface {
	Name() string
	Run(ctx context.Context, cmd Cmd) error
	// CopyClosure copies the closures of paths that the node lacks from the local store into the
	// node's store and returns which paths it copied.
	CopyClosure(ctx context.Context, paths []string) (Copied, error)
}

// Copied is what CopyClosure did.
type Copied struct {
	Closure  int           `json:"closure"` // paths in the closure
	Missing  []string      `json:"missing"` // the paths the node lacked and now has, references first
	Sent     int64         `json:"sent"`    // bytes of the export stream sent (0 with nix-copy)
	Method   string        `json:"method"`
	From     string        `json:"from,omitempty"` // the node the paths were fetched from (Fan), "" for this process
	Duration time.Duration `json:"duration_ns"`
}

// LocalStore is the Nix store closures are copied from.
type LocalStore interface {
	// Closure is the closure of paths, every path after the paths it references.
	Closure(ctx context.Context, paths []string) ([]string, error)
	// Export writes paths (and nothing else) to w in nix-store --export format.
	Export(ctx context.Context, paths []string, w io.Writer) error
}

// NixStore is the local store through the nix-store command (Nix 2.8 and newer).
type NixStore struct {
	// Bin is the nix-store program; empty means nix-store from PATH.
	Bin string
	// Env is the environment of nix-store; nil means this process's.
	Env []string
}

func (s NixStore) command(ctx context.Context, args ...string) *exec.Cmd {
	bin := s.Bin
	if bin == "" {
		bin = "nix-store"
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = s.Env
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// Closure runs nix-store --query --requisites, which prints a closure references first.
func (s NixStore) Closure(ctx context.Context, paths []string) ([]string, error) {
	var stdout, stderr bytes.Buffer
	cmd := s.command(ctx, append([]string{"--query", "--requisites", "--"}, paths...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("nix-store --query --requisites: %w%s", err, detail(stderr.String()))
	}
	return strings.Fields(stdout.String()), nil
}

// Hashes runs nix-store --query --hash: the NAR hash of each path, in order.
func (s NixStore) Hashes(ctx context.Context, paths []string) ([]string, error) {
	var stdout, stderr bytes.Buffer
	cmd := s.command(ctx, append([]string{"--query", "--hash", "--"}, paths...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("nix-store --query --hash: %w%s", err, detail(stderr.String()))
	}
	hashes := strings.Fields(stdout.String())
	if len(hashes) != len(paths) {
		return nil, fmt.Errorf("nix-store --query --hash: %d hashes for %d paths", len(hashes), len(paths))
	}
	return hashes, nil
}

// Export runs nix-store --export.
func (s NixStore) Export(ctx context.Context, paths []string, w io.Writer) error {
	var stderr bytes.Buffer
	cmd := s.command(ctx, append([]string{"--export", "--"}, paths...)...)
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nix-store --export: %w%s", err, detail(stderr.String()))
	}
	return nil
}

// detail is a command's standard error for an error message.
func detail(s string) string {
	if s = strings.TrimSpace(s); s == "" {
		return ""
	}
	return ": " + s
}

// SSHNode is a node reached over SSH (its Client), with the local store closures come from and the
// Config.ClosureCopy method.
type SSHNode struct {
	*Client
	local  LocalStore
	method string
}

var _ Node = (*SSHNode)(nil)

// Node is the node on host h; local nil means the NixStore of the Pool's Nix (Options.Nix).
func (p *Pool) Node(h Host, local LocalStore) (*SSHNode, error) {
	c, err := p.Client(h)
	if err != nil {
		return nil, err
	}
	if local == nil {
		local = NixStore{Bin: nixProgram(p.nix, "nix-store")}
	}
	return &SSHNode{Client: c, local: local, method: p.cfg.ClosureCopy}, nil
}

// storePath is a path nix-store prints: /nix/store/<32 base-32 chars>-<name>.
var storePath = regexp.MustCompile(`^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$`)

// maxBatch bounds the bytes of store paths on one remote command line: sshd hands the whole line to
// the login shell as one argument, and Linux caps one argument at 128 KiB.
const maxBatch = 96 << 10

// CopyClosure asks the node which paths of the closure of paths it lacks (nix-store --check-validity
// --print-invalid) and streams exactly those over the SSH connection: nix-store --export here into
// nix-store --import there, references first, in batches that fit on a command line. With
// Config.ClosureCopy nix-copy, nix copy --to ssh-ng:// sends them instead, through its own OpenSSH
// client with the same key, known_hosts and jump host. Nix imports every path whole or not at all,
// so a cut connection leaves no partial path behind.
func (n *SSHNode) CopyClosure(ctx context.Context, paths []string) (Copied, error) {
	return n.copyClosureOf(ctx, paths, nil)
}

// copyClosureOf is CopyClosure of paths whose closure the caller has read already (nil: not yet).
func (n *SSHNode) copyClosureOf(ctx context.Context, paths, closure []string) (Copied, error) {
	start := time.Now()
	res, err := n.copyClosure(ctx, paths, closure)
	res.Duration = time.Since(start)
	if err != nil {
		return res, wrapErr(n.name, "copy closure", err)
	}
	n.pool.log.Info("closure copied", "host", n.name, "method", res.Method, "closure", res.Closure,
		"copied", len(res.Missing), "sent", res.Sent, "duration", res.Duration.Round(time.Millisecond))
	return res, nil
}

func (n *SSHNode) copyClosure(ctx context.Context, paths, closure []string) (Copied, error) {
	res := Copied{Method: n.method}
	if len(paths) == 0 {
		return res, nil
	}
	for _, p := range paths {
		if !storePath.MatchString(p) {
			return res, fmt.Errorf("%q is not a store path", p)
		}
	}
	if closure == nil {
		var err error
		if closure, err = n.local.Closure(ctx, paths); err != nil {
			return res, err
		}
	}
	res.Closure = len(closure)
	for _, p := range closure {
		if !storePath.MatchString(p) {
			return res, fmt.Errorf("local store: %q is not a store path", p)
		}
	}
	batches := batch(closure)
	var missingBatches [][]string
	for _, b := range batches {
		invalid, err := n.invalid(ctx, b)
		if err != nil {
			return res, err
		}
		if len(invalid) > 0 {
			missingBatches = append(missingBatches, invalid)
			res.Missing = append(res.Missing, invalid...)
		}
	}
	if len(res.Missing) == 0 {
		return res, nil
	}
	if n.method == CopyNix {
		return res, n.nixCopy(ctx, paths)
	}
	for _, b := range missingBatches {
		sent, err := n.importBatch(ctx, b)
		res.Sent += sent
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// batch cuts paths (in order) into batches of at most maxBatch bytes.
func batch(paths []string) [][]string {
	var out [][]string
	var cur []string
	size := 0
	for _, p := range paths {
		if size+len(p)+1 > maxBatch && len(cur) > 0 {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, p)
		size += len(p) + 1
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// invalid are the paths of b the node's store does not hold, in b's order.
func (n *SSHNode) invalid(ctx context.Context, b []string) ([]string, error) {
	out, err := n.Output(ctx, 0, append([]string{"nix-store", "--check-validity", "--print-invalid", "--"}, b...)...)
	if err != nil {
		return nil, err
	}
	got := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		got[p] = true
	}
	var invalid []string
	for _, p := range b {
		if got[p] {
			invalid = append(invalid, p)
			delete(got, p)
		}
	}
	if len(got) > 0 {
		return nil, fmt.Errorf("nix-store --check-validity named paths it was not asked about: %q", keys(got))
	}
	return invalid, nil
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// importBatch streams nix-store --export of paths into nix-store --import on the node.
func (n *SSHNode) importBatch(ctx context.Context, paths []string) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// An OS pipe, not an io.Pipe: nix-store --export writes into it directly (exec hands the file
	// to the child) and the SSH session reads from it, with no goroutine copying between the two.
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer pr.Close()
	exported := make(chan error, 1)
	go func() { // ends when the export ends: completed, failed, or its writes fail on the closed pipe
		err := n.local.Export(ctx, paths, pw)
		pw.Close()
		exported <- err
	}()
	counted := &countReader{r: pr}
	var imported capWriter
	imported.max = 1 << 20
	err = n.Run(ctx, Cmd{Argv: []string{"nix-store", "--import"}, Stdin: counted, Stdout: &imported,
		Step: fmt.Sprintf("nix-store --import (%d paths)", len(paths))})
	pr.Close() // unblocks an export the import stopped reading
	if err != nil {
		cancel()
		<-exported
		return counted.n.Load(), err
	}
	if err := <-exported; err != nil {
		return counted.n.Load(), err
	}
	got := map[string]bool{}
	for _, p := range strings.Fields(imported.buf.String()) {
		got[p] = true
	}
	for _, p := range paths {
		if !got[p] {
			return counted.n.Load(), fmt.Errorf("nix-store --import did not report %s as imported", p)
		}
	}
	return counted.n.Load(), nil
}

// nixCopy runs nix copy --to ssh-ng://user@host over OpenSSH with a temporary ssh_config that pins
// the key, known_hosts (strict), timeouts and the jump host.
func (n *SSHNode) nixCopy(ctx context.Context, paths []string) error {
	cfg := n.pool.cfg
	if cfg.KeyPassphraseFile != "" && !cfg.Agent {
		return errors.New("nix-copy: OpenSSH cannot read the key's passphrase from a file: use the ssh-agent or CIMDEPLOY_CLOSURE_COPY=export")
	}
	for _, f := range []string{cfg.KeyFile, cfg.KnownHosts, cfg.AgentSocket} {
		if strings.ContainsAny(f, "\"\\\n") {
			return fmt.Errorf("nix-copy: %q: ssh_config cannot hold a path with quotes or backslashes", f)
		}
	}
	dir, err := os.MkdirTemp("", "cimdeploy-ssh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	conf := filepath.Join(dir, "config")
	if err := os.WriteFile(conf, []byte(n.sshConfig()), 0o600); err != nil {
		return err
	}
	host, _ := splitAddr(n.addr)
	args := []string{"copy", "--extra-experimental-features", "nix-command", "--no-check-sigs",
		"--to", "ssh-ng://" + n.user + "@" + host}
	args = append(args, paths...)
	cmd := exec.CommandContext(ctx, nixProgram(n.pool.nix, "nix"), args...)
	cmd.Env = append(os.Environ(), "NIX_SSHOPTS=-F "+conf)
	cmd.WaitDelay = 10 * time.Second
	var stderr tailBuffer
	stderr.max = stderrKeep
	out := n.pool.out.stream(n.name, "nix copy")
	cmd.Stdout, cmd.Stderr = out, io.MultiWriter(&stderr, out)
	err = cmd.Run()
	if f, ok := out.(interface{ Flush() }); ok {
		f.Flush()
	}
	if err != nil {
		return fmt.Errorf("nix copy --to ssh-ng://%s@%s: %w%s", n.user, host, err, detail(stderr.String()))
	}
	return nil
}

// sshConfig is the OpenSSH configuration of nixCopy: this node (through the jump host, if any), then
// the settings of every host.
func (n *SSHNode) sshConfig() string {
	cfg := n.pool.cfg
	q := func(s string) string { return `"` + s + `"` }
	host, port := splitAddr(n.addr)
	var b strings.Builder
	fmt.Fprintf(&b, "Host %s\n  HostName %s\n  Port %s\n  User %s\n", host, host, port, n.user)
	if n.jump != nil {
		jh, jp := splitAddr(n.jump.addr)
		fmt.Fprintf(&b, "  ProxyJump %s@%s:%s\n", n.jump.user, jh, jp)
	}
	agent := "none"
	if cfg.Agent {
		agent = q(cfg.AgentSocket)
	}
	fmt.Fprintf(&b, "Host *\n  IdentitiesOnly yes\n  IdentityAgent %s\n", agent)
	if cfg.KeyFile != "" {
		fmt.Fprintf(&b, "  IdentityFile %s\n", q(cfg.KeyFile))
	}
	fmt.Fprintf(&b, "  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"+
		"  BatchMode yes\n  ConnectTimeout %d\n  ServerAliveInterval %d\n  ServerAliveCountMax %d\n  LogLevel ERROR\n",
		q(cfg.KnownHosts), int(cfg.ConnectTimeout.Seconds()+0.5), max(1, int(cfg.Keepalive.Seconds()+0.5)), cfg.KeepaliveMax)
	return b.String()
}

// splitAddr splits host:port, without brackets around an IPv6 host.
func splitAddr(addr string) (host, port string) {
	i := strings.LastIndexByte(addr, ':')
	host, port = addr[:i], addr[i+1:]
	return strings.Trim(host, "[]"), port
}

// nixProgram is the program name (nix, nix-store) of the Nix that nix names (Options.Nix): looked up
// in PATH when nix is empty or a bare name, else in nix's directory (nix itself when it is one).
func nixProgram(nix, name string) string {
	if !strings.ContainsRune(nix, '/') {
		return name
	}
	if fi, err := os.Stat(nix); err == nil && fi.IsDir() {
		return filepath.Join(nix, name)
	}
	return filepath.Join(filepath.Dir(nix), name)
}
