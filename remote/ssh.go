package remote

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Host is a machine reached over SSH.
type Host struct {
	// Name names the host in errors and logs: nats-1, pve.
	Name string
	// Addr is host or host:port; without a port, Config.Port.
	Addr string
	// User is the login user; empty means Config.User.
	User string
	// Jump is the host ([user@]host[:port]) to connect through; empty means a direct connection.
	Jump string
}

// NodeHost is the SSH host of a node at addr: through Config.Jump when one is set.
func (c Config) NodeHost(name string, addr netip.Addr) Host {
	return Host{Name: name, Addr: addr.String(), Jump: c.Jump}
}

// ProxmoxSSH is the SSH host of the Proxmox host (Config.ProxmoxHost), called name in errors.
func (c Config) ProxmoxSSH(name string) Host {
	if name == "" {
		name = c.ProxmoxHost
	}
	return Host{Name: name, Addr: c.ProxmoxHost}
}

// Options are what a Pool reports to.
type Options struct {
	// Logger receives connection events and one record per command (host, command, exit status,
	// duration); nil discards them.
	Logger *slog.Logger
	// Output is the run log: remote standard output and error of commands whose Cmd leaves them
	// nil, line by line, each line prefixed with the host and the stream, and a line with each
	// command's exit status. nil discards it.
	Output io.Writer
	// Nix is the controller's nix, as nixrunner.Config.Nix (CIMDEPLOY_NIX_BIN) names it: an executable or
	// the directory holding nix and nix-store. The local store is read with the nix-store beside it and
	// nix copy runs it, so the whole controller side uses one Nix. Empty or a bare name: from PATH.
	Nix string
}

// Pool holds one SSH connection per host and hands out a Client per host. Connections are opened on
// first use, kept alive with keepalive@openssh.com, closed when dead and opened again on the next
// use. A Pool is safe for concurrent use; Close closes every connection and waits for every
// goroutine the Pool started.
type Pool struct {
	cfg    Config
	nix    string // Options.Nix
	log    *slog.Logger
	out    *runLog
	auth   []ssh.AuthMethod
	keys   []ssh.PublicKey // of KeyFile
	agents agent.ExtendedAgent
	agent  io.Closer
	probe  ssh.PublicKey
	ctx    context.Context // cancelled by Close: ends dials in progress
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	clients map[string]*Client
	wg      sync.WaitGroup // dials, connection watchers, keepalives
}

// ErrClosed is returned by a Client of a closed Pool.
var ErrClosed = errors.New("ssh pool closed")

// NewPool checks cfg, loads the key (and its passphrase) and connects to the ssh-agent if cfg asks
// for it. It opens no SSH connection yet.
func NewPool(cfg Config, opts Options) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, log: opts.Logger, out: newRunLog(opts.Output), nix: opts.Nix, clients: map[string]*Client{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if cfg.KeyFile != "" {
		signer, err := loadKey(cfg.KeyFile, cfg.KeyPassphraseFile)
		if err != nil {
			return nil, err
		}
		p.auth = append(p.auth, ssh.PublicKeys(signer))
		p.keys = append(p.keys, signer.PublicKey())
	}
	if cfg.Agent {
		conn, err := net.Dial("unix", cfg.AgentSocket)
		if err != nil {
			return nil, fmt.Errorf("ssh-agent %s: %w", cfg.AgentSocket, err)
		}
		p.agent, p.agents = conn, agent.NewClient(conn)
		p.auth = append(p.auth, ssh.PublicKeysCallback(p.agents.Signers))
	}
	// probe is a key no known_hosts holds: checking it lists the keys known for a host (hostKeys).
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	if p.probe, err = ssh.NewPublicKey(pub); err != nil {
		return nil, err
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// AuthorizedKeys are the public keys the pool logs in with (the key file's, then the agent's), as
// authorized_keys lines: what a new host must let in (pct create --ssh-public-keys).
func (p *Pool) AuthorizedKeys() ([]byte, error) {
	keys := append([]ssh.PublicKey(nil), p.keys...)
	if p.agents != nil {
		listed, err := p.agents.List()
		if err != nil {
			return nil, fmt.Errorf("ssh-agent %s: %w", p.cfg.AgentSocket, err)
		}
		for _, k := range listed {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no SSH key to give a new host: set CIMDEPLOY_SSH_KEY_FILE or load a key into the agent")
	}
	var b []byte
	for _, k := range keys {
		b = append(b, ssh.MarshalAuthorizedKey(k)...)
	}
	return b, nil
}

// loadKey reads a private key; an encrypted key needs passFile.
func loadKey(keyFile, passFile string) (ssh.Signer, error) {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		if passFile == "" {
			return nil, fmt.Errorf("ssh key %s is encrypted: set CIMDEPLOY_SSH_KEY_PASSPHRASE_FILE", keyFile)
		}
		pass, rerr := os.ReadFile(passFile)
		if rerr != nil {
			return nil, fmt.Errorf("ssh key passphrase: %w", rerr)
		}
		pass = []byte(strings.TrimRight(string(pass), "\r\n"))
		signer, err = ssh.ParsePrivateKeyWithPassphrase(data, pass)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh key %s: %w", keyFile, err)
	}
	return signer, nil
}

// Client returns the Client of host h; Clients of the same user, address and jump host share one
// connection. It does not connect: the first command does.
func (p *Pool) Client(h Host) (*Client, error) {
	user := h.User
	if user == "" {
		user = p.cfg.User
	}
	addr, err := hostPort(h.Addr, p.cfg.Port)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Name, err)
	}
	if h.Name == "" {
		h.Name = addr
	}
	var jump *Client
	if h.Jump != "" {
		ju, ja, err := splitUserHost(h.Jump, p.cfg.User, p.cfg.Port)
		if err != nil {
			return nil, fmt.Errorf("%s: jump host: %w", h.Name, err)
		}
		if ja != addr {
			if jump, err = p.Client(Host{Name: ja, Addr: ja, User: ju}); err != nil {
				return nil, err
			}
		}
	}
	key := user + "@" + addr
	if jump != nil {
		key += " via " + jump.key
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[key]; ok {
		return c, nil
	}
	c := &Client{pool: p, key: key, name: h.Name, user: user, addr: addr, jump: jump,
		slots: make(chan struct{}, p.cfg.MaxSessions)}
	p.clients[key] = c
	return c, nil
}

// Close closes every connection and waits until every goroutine of the Pool has ended. Commands
// still running fail with ErrConnectionLost.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.cancel()
	clients := make([]*Client, 0, len(p.clients))
	for _, c := range p.clients {
		clients = append(clients, c)
	}
	p.mu.Unlock()
	// Dials in progress end on the cancelled context; every connection they opened is registered
	// before they return, so after the first wait all are found below.
	for _, c := range clients {
		c.waitDial()
	}
	for _, c := range clients {
		c.closeConn(ErrClosed)
	}
	p.wg.Wait()
	if p.agent != nil {
		return p.agent.Close()
	}
	return nil
}

// goroutine starts f as a goroutine of the pool, unless the pool is closed.
func (p *Pool) goroutine(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}

// Client is the SSH connection to one host, opened on demand and opened again after it died. Its
// methods are safe for concurrent use; at most Config.MaxSessions commands run at once on it (the
// rest wait), as sshd refuses more sessions per connection (MaxSessions, 10 by default).
type Client struct {
	pool  *Pool
	key   string
	name  string
	user  string
	addr  string
	jump  *Client
	slots chan struct{}

	mu   sync.Mutex
	conn *conn
	dial *dialCall
}

// Name is the host's name, as errors and logs give it.
func (c *Client) Name() string { return c.name }

// Addr is the host's address (host:port).
func (c *Client) Addr() string { return c.addr }

type dialCall struct {
	done chan struct{}
	conn *conn
	err  error
}

// conn is one SSH connection; done is closed once it is gone, and err says why.
type conn struct {
	ssh  *ssh.Client
	done chan struct{}

	mu     sync.Mutex
	reason error
}

// fail closes the connection, recording why (the first reason wins).
func (cn *conn) fail(reason error) {
	cn.mu.Lock()
	if cn.reason == nil {
		cn.reason = reason
	}
	cn.mu.Unlock()
	_ = cn.ssh.Close()
}

func (cn *conn) gone() bool {
	select {
	case <-cn.done:
		return true
	default:
		return false
	}
}

// why is the reason the connection closed, if it is known.
func (cn *conn) why() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.reason
}

// alive asks the server for a reply (keepalive@openssh.com) and reports whether one came within
// timeout; a connection that gives none is closed.
func (cn *conn) alive(timeout time.Duration) bool {
	if cn.gone() {
		return false
	}
	replied := make(chan error, 1)
	go func() { // ends with the reply or with the connection
		_, _, err := cn.ssh.SendRequest(keepaliveRequest, true, nil)
		replied <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-replied:
		return err == nil
	case <-cn.done:
		return false
	case <-t.C:
		cn.fail(fmt.Errorf("no answer to a keepalive within %s", timeout))
		return false
	}
}

const keepaliveRequest = "keepalive@openssh.com"

// connect returns the live connection, dialling one if there is none; concurrent callers share one
// dial. The dial belongs to the pool (bounded by ConnectTimeout); ctx only bounds the wait for it.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	if cn := c.conn; cn != nil && !cn.gone() {
		c.mu.Unlock()
		return cn, nil
	}
	d := c.dial
	if d == nil {
		d = &dialCall{done: make(chan struct{})}
		started := c.pool.goroutine(func() {
			cn, err := c.dialNow(c.pool.ctx)
			c.mu.Lock()
			c.dial = nil
			if err == nil {
				c.conn = cn
			}
			c.mu.Unlock()
			d.conn, d.err = cn, err
			close(d.done)
		})
		if !started {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		c.dial = d
	}
	c.mu.Unlock()
	select {
	case <-d.done:
		return d.conn, d.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Connect makes sure the Client has a connection, dialling one (TCP, handshake with strict host key
// checking, authentication) if it has none, and runs no command. On a Client of a Pool of its own it
// is a check that the host accepts new connections.
func (c *Client) Connect(ctx context.Context) error {
	if _, err := c.connect(ctx); err != nil {
		return &Error{Host: c.name, Step: "connect", Err: err}
	}
	return nil
}

func (c *Client) waitDial() {
	c.mu.Lock()
	d := c.dial
	c.mu.Unlock()
	if d != nil {
		<-d.done
	}
}

func (c *Client) closeConn(reason error) {
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	if cn != nil {
		cn.fail(reason)
	}
}

// dialNow opens a connection: TCP (directly or through the jump host), handshake with strict host
// key checking, authentication; all within ConnectTimeout.
func (c *Client) dialNow(ctx context.Context) (*conn, error) {
	p := c.pool
	timeout := p.cfg.ConnectTimeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()

	keys, err := p.hostKeys(c.addr)
	if err != nil {
		return nil, err
	}
	var nc net.Conn
	if c.jump != nil {
		jc, err := c.jump.connect(ctx)
		if err != nil {
			return nil, fmt.Errorf("jump host %s: %w", c.jump.name, err)
		}
		if nc, err = jc.ssh.DialContext(ctx, "tcp", c.addr); err != nil {
			return nil, fmt.Errorf("jump host %s: open a channel to %s: %w", c.jump.name, c.addr, orTimeout(ctx, timeout, err))
		}
	} else {
		d := net.Dialer{KeepAlive: p.cfg.Keepalive}
		if nc, err = d.DialContext(ctx, "tcp", c.addr); err != nil {
			return nil, orTimeout(ctx, timeout, err)
		}
	}
	// Deadlines do not work on a channel of a jump host; closing the connection works on both.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	check := &hostKeyCheck{file: p.cfg.KnownHosts, addr: c.addr, known: keys}
	config := &ssh.ClientConfig{
		User:              c.user,
		Auth:              p.auth,
		HostKeyCallback:   check.callback,
		HostKeyAlgorithms: keys.algorithms(),
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, c.addr, config)
	passed, keyErr := check.result()
	if !stop() {
		if err == nil {
			sc.Close()
		}
		nc.Close()
		if keyErr != nil {
			return nil, keyErr
		}
		return nil, fmt.Errorf("ssh handshake with %s: %w", c.addr, orTimeout(ctx, timeout, ctx.Err()))
	}
	if err != nil {
		nc.Close()
		switch {
		case keyErr != nil:
			return nil, keyErr
		case passed && strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("%w as %s on %s: %w", ErrAuth, c.user, c.addr, err)
		}
		return nil, fmt.Errorf("ssh handshake with %s: %w", c.addr, err)
	}
	cn := &conn{ssh: ssh.NewClient(sc, chans, reqs), done: make(chan struct{})}
	watching := p.goroutine(func() {
		err := cn.ssh.Wait()
		cn.mu.Lock()
		if cn.reason == nil {
			cn.reason = err
		}
		cn.mu.Unlock()
		close(cn.done)
		p.log.Info("ssh connection closed", "host", c.name, "addr", c.addr, "reason", cn.why())
	})
	if !watching || !p.goroutine(func() { c.keepalive(cn) }) {
		cn.ssh.Close()
		return nil, ErrClosed
	}
	via := ""
	if c.jump != nil {
		via = c.jump.name
	}
	p.log.Info("ssh connected", "host", c.name, "addr", c.addr, "user", c.user, "via", via,
		"duration", time.Since(start).Round(time.Millisecond))
	return cn, nil
}

// orTimeout words the error of a step that the connect timeout cut short.
func orTimeout(ctx context.Context, timeout time.Duration, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s (CIMDEPLOY_SSH_CONNECT_TIMEOUT): %w", timeout, context.DeadlineExceeded)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// keepalive sends keepalive@openssh.com every Keepalive and closes the connection when a request
// stays unanswered for Keepalive*KeepaliveMax, like OpenSSH's ServerAliveInterval/CountMax.
func (c *Client) keepalive(cn *conn) {
	cfg := c.pool.cfg
	wait := cfg.Keepalive * time.Duration(cfg.KeepaliveMax)
	t := time.NewTicker(cfg.Keepalive)
	defer t.Stop()
	for {
		select {
		case <-cn.done:
			return
		case <-t.C:
		}
		dead := time.AfterFunc(wait, func() {
			cn.fail(fmt.Errorf("%w: %d keepalives unanswered in %s", ErrConnectionLost, cfg.KeepaliveMax, wait))
		})
		_, _, err := cn.ssh.SendRequest(keepaliveRequest, true, nil)
		dead.Stop()
		if err != nil {
			cn.fail(fmt.Errorf("%w: keepalive: %w", ErrConnectionLost, err))
			return
		}
	}
}

// knownKeys are the keys known_hosts holds for one address.
type knownKeys struct {
	callback ssh.HostKeyCallback
	keys     []knownhosts.KnownKey
}

// hostKeys reads known_hosts (again on every dial, so an added line counts at the next connection)
// and finds the keys it holds for addr.
func (p *Pool) hostKeys(addr string) (knownKeys, error) {
	cb, err := knownhosts.New(p.cfg.KnownHosts)
	if err != nil {
		return knownKeys{}, fmt.Errorf("known_hosts: %w", err)
	}
	k := knownKeys{callback: cb}
	var ke *knownhosts.KeyError
	if err := cb(addr, probeAddr(addr), p.probe); errors.As(err, &ke) {
		k.keys = ke.Want
	}
	return k, nil
}

// probeAddr is a TCP address for the known_hosts callback, which checks the name (addr) first and
// needs a *net.TCPAddr as the remote even where there is none (a channel of a jump host).
func probeAddr(addr string) *net.TCPAddr {
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	ip := net.ParseIP(host)
	if ip == nil {
		ip = net.IPv4zero
	}
	return &net.TCPAddr{IP: ip, Port: n}
}

// algorithms are the host key algorithms to ask for: those of the known keys, so that a server that
// prefers another algorithm (and has a key of it we do not know) shows the key we know. Empty (the
// defaults) when the host is unknown: the error then shows what it offers.
func (k knownKeys) algorithms() []string {
	var algos []string
	seen := map[string]bool{}
	add := func(a ...string) {
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				algos = append(algos, x)
			}
		}
	}
	for _, kk := range k.keys {
		switch t := kk.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return algos
}

// hostKeyCheck checks the server's key against known_hosts and keeps the typed error.
type hostKeyCheck struct {
	mu     sync.Mutex // the callback runs on the handshake's goroutine
	file   string
	addr   string
	known  knownKeys
	passed bool
	err    *HostKeyError
}

// result is what the callback found: passed, or the error it returned.
func (h *hostKeyCheck) result() (bool, *HostKeyError) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.passed, h.err
}

func (h *hostKeyCheck) callback(_ string, _ net.Addr, key ssh.PublicKey) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	err := h.known.callback(h.addr, probeAddr(h.addr), key)
	if err == nil {
		h.passed = true
		return nil
	}
	e := &HostKeyError{Addr: h.addr, KnownHosts: h.file, Offered: key}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &re):
		e.Revoked = true
		e.Known = []knownhosts.KnownKey{re.Revoked}
	case errors.As(err, &ke):
		e.Known = ke.Want
	default:
		e.Err = err
	}
	h.err = e
	return e
}

// HostKeyError is a host whose key known_hosts does not vouch for: unknown (Known is empty), a
// mismatch (Known holds the keys known_hosts has for it), or a revoked key.
type HostKeyError struct {
	Addr       string
	KnownHosts string
	Offered    ssh.PublicKey
	Known      []knownhosts.KnownKey
	Revoked    bool
	Err        error // a known_hosts problem other than the above
}

func (e *HostKeyError) Error() string {
	fp := e.Offered.Type() + " " + ssh.FingerprintSHA256(e.Offered)
	host, port, _ := net.SplitHostPort(e.Addr)
	switch {
	case e.Err != nil:
		return fmt.Sprintf("host key of %s (%s): %v", e.Addr, fp, e.Err)
	case e.Revoked:
		return fmt.Sprintf("host key of %s is revoked in %s:%d (%s): refusing to connect",
			e.Addr, e.Known[0].Filename, e.Known[0].Line, fp)
	case len(e.Known) == 0:
		return fmt.Sprintf("host %s is not in %s: it offers the key %s. Check that fingerprint on the host "+
			"(ssh-keygen -lf /etc/ssh/ssh_host_%s_key.pub), then trust it with: echo %s >> %s",
			e.Addr, e.KnownHosts, fp, keyFileKind(e.Offered),
			Quote(knownhosts.Line([]string{e.Addr}, e.Offered)), Quote(e.KnownHosts))
	}
	var known []string
	for _, k := range e.Known {
		known = append(known, fmt.Sprintf("%s:%d has %s %s", k.Filename, k.Line, k.Key.Type(), ssh.FingerprintSHA256(k.Key)))
	}
	return fmt.Sprintf("HOST KEY MISMATCH for %s: %s, but the host offers %s. Someone may be intercepting the "+
		"connection, or the host was reinstalled; only after checking the new fingerprint on the host, replace "+
		"the old key: ssh-keygen -R %s -f %s",
		e.Addr, strings.Join(known, "; "), fp, Quote(knownhosts.Normalize(net.JoinHostPort(host, port))), Quote(e.KnownHosts))
}

// keyFileKind is the name part of the host key file sshd keeps a key of this type in.
func keyFileKind(k ssh.PublicKey) string {
	switch k.Type() {
	case ssh.KeyAlgoED25519:
		return "ed25519"
	case ssh.KeyAlgoRSA:
		return "rsa"
	case ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		return "ecdsa"
	}
	return "*"
}
