package remote_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/sethvargo/go-envconfig"
	"golang.org/x/crypto/ssh"
)

// These tests are about the SSH client itself, against the lab's real sshd (and, where sshd cannot
// misbehave on demand, an sshd of their own or a small SSH server in the test). They change the
// lab's hosts (firewall, dropped connections), so they do not run in parallel.

// knownHostsLine is the lab's known_hosts line of addr.
func knownHostsLine(t *testing.T, l *lab.Lab, addr string) string {
	t.Helper()
	data, err := os.ReadFile(l.KnownHosts())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == addr {
			return line
		}
	}
	t.Fatalf("no known_hosts line for %s", addr)
	return ""
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestUnknownHostSaysHowToTrustIt(t *testing.T) {
	l := shared.Get(t)
	cfg := labConfig(l)
	cfg.KnownHosts = writeFile(t, "")
	p, _ := newPool(t, cfg)
	n := l.Node("nats-1")
	err := client(t, p, n.Name(), n.Address().String()).Run(t.Context(), remote.Cmd{Argv: []string{"true"}})
	t.Logf("error: %v", err)
	var hk *remote.HostKeyError
	if !errors.As(err, &hk) || len(hk.Known) != 0 {
		t.Fatalf("%v: want a *HostKeyError for an unknown host", err)
	}
	keyLine := knownHostsLine(t, l, n.Address().String())
	pub, _, _, _, err2 := ssh.ParseAuthorizedKey([]byte(strings.SplitN(keyLine, " ", 2)[1]))
	if err2 != nil {
		t.Fatal(err2)
	}
	for _, want := range []string{"nats-1: run `true`: connect: host ", "not in " + cfg.KnownHosts, ssh.FingerprintSHA256(pub), "echo '" + keyLine + "' >> "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q", want)
		}
	}
	poll(t, t.Context(), 5*time.Second, "no connection left on the host", func() bool { return len(n.SSHSessions()) == 0 })
}

func TestHostKeyMismatchIsRefused(t *testing.T) {
	l := shared.Get(t)
	cfg := labConfig(l)
	n1, n2 := l.Node("nats-1"), l.Node("nats-2")
	other := knownHostsLine(t, l, n2.Address().String())
	cfg.KnownHosts = writeFile(t, "# a comment\n"+n1.Address().String()+" "+strings.SplitN(other, " ", 2)[1]+"\n")
	p, _ := newPool(t, cfg)
	err := client(t, p, n1.Name(), n1.Address().String()).Run(t.Context(), remote.Cmd{Argv: []string{"true"}})
	t.Logf("error: %v", err)
	var hk *remote.HostKeyError
	if !errors.As(err, &hk) || len(hk.Known) != 1 || hk.Known[0].Line != 2 {
		t.Fatalf("%v: want a *HostKeyError naming line 2", err)
	}
	for _, want := range []string{"nats-1: run `true`: connect: HOST KEY MISMATCH", cfg.KnownHosts + ":2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q", want)
		}
	}
}

func TestAuthRefused(t *testing.T) {
	l := shared.Get(t)
	cfg := labConfig(l)
	cfg.KeyFile = filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", cfg.KeyFile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	p, _ := newPool(t, cfg)
	n := l.Node("nats-1")
	err := client(t, p, n.Name(), n.Address().String()).Run(t.Context(), remote.Cmd{Argv: []string{"true"}})
	t.Logf("error: %v", err)
	if !errors.Is(err, remote.ErrAuth) || !strings.HasPrefix(err.Error(), "nats-1: run `true`: connect: authentication refused") {
		t.Errorf("%v: want ErrAuth naming nats-1", err)
	}
}

func TestHostDown(t *testing.T) {
	l := shared.Get(t)
	p, _ := newPool(t, labConfig(l))
	down := l.PVE().Address().As4()
	down[3] = 99 // nothing listens there
	addr := net.IP(down[:]).String()
	err := client(t, p, "nats-99", addr).Run(t.Context(), remote.Cmd{Argv: []string{"true"}})
	t.Logf("error: %v", err)
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.HasPrefix(err.Error(), "nats-99: run `true`: connect: ") {
		t.Errorf("%v: want connection refused, naming the host and the step", err)
	}
}

func TestConnectTimeout(t *testing.T) {
	l := shared.Get(t)
	cfg := labConfig(l)
	cfg.ConnectTimeout = 500 * time.Millisecond
	p, _ := newPool(t, cfg)
	n := l.Node("nats-2")
	if err := n.FirewallSSHD(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.UnfirewallSSHD(); err != nil {
			t.Error(err)
		}
	})
	start := time.Now()
	err := client(t, p, n.Name(), n.Address().String()).Run(t.Context(), remote.Cmd{Argv: []string{"true"}})
	t.Logf("error after %s: %v", time.Since(start), err)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 500ms") {
		t.Errorf("%v: want a connect timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s with a 500ms connect timeout", d)
	}
}

func TestOneConnectionPerHostForManyCommands(t *testing.T) {
	l := shared.Get(t)
	p, _ := newPool(t, labConfig(l))
	n := l.Node("nats-1")
	c := client(t, p, n.Name(), n.Address().String())
	before := len(n.SSHSessions())
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() {
			var out bytes.Buffer
			err := c.Run(t.Context(), remote.Cmd{Argv: []string{"echo", fmt.Sprint(i)}, Stdout: &out})
			if err == nil && out.String() != fmt.Sprintf("%d\n", i) {
				err = fmt.Errorf("command %d got %q", i, out.String())
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := len(n.SSHSessions()) - before; got != 1 {
		t.Errorf("%d connections for 40 commands, want 1", got)
	}
	// Another Client of the same host shares the connection.
	if c2 := client(t, p, "again", n.Address().String()+":22"); c2 != c {
		t.Error("a second Client for the same host")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	poll(t, t.Context(), 5*time.Second, "connection closed on the host", func() bool { return len(n.SSHSessions()) == before })
	err := c.Run(t.Context(), remote.Cmd{Argv: []string{"true"}})
	if !errors.Is(err, remote.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

func TestReconnectAfterTheConnectionDropped(t *testing.T) {
	l := shared.Get(t)
	p, _ := newPool(t, labConfig(l))
	n := l.Node("nats-2")
	c := client(t, p, n.Name(), n.Address().String())
	if err := c.Run(t.Context(), remote.Cmd{Argv: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
	// A command running when the connection drops fails with ErrConnectionLost.
	var started syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- c.Run(t.Context(), remote.Cmd{Argv: []string{"sh", "-c", "echo started; exec sleep 30"}, Stdout: &started})
	}()
	poll(t, t.Context(), 5*time.Second, "command started", func() bool { return started.String() != "" })
	if n.DropSSHConnections() == 0 {
		t.Fatal("no connection to drop")
	}
	err := <-done
	t.Logf("error: %v", err)
	if !errors.Is(err, remote.ErrConnectionLost) || !strings.HasPrefix(err.Error(), "nats-2: run `sh -c") {
		t.Errorf("%v: want ErrConnectionLost naming the host and command", err)
	}
	// The next command connects again.
	var out bytes.Buffer
	if err := c.Run(t.Context(), remote.Cmd{Argv: []string{"echo", "back"}, Stdout: &out}); err != nil || out.String() != "back\n" {
		t.Errorf("after the drop: %q, %v", out.String(), err)
	}
}

func TestContextCancelEndsTheCommand(t *testing.T) {
	l := shared.Get(t)
	p, _ := newPool(t, labConfig(l))
	n := l.Node("nats-1")
	c := client(t, p, n.Name(), n.Address().String())
	// sshd ignores signals for root sessions: a cancelled command ends when it reads its closed input
	// or writes to its closed output.
	for name, script := range map[string]string{"reader": "echo $$; exec cat", "writer": "echo $$ >&2; exec cat /dev/zero"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			var pid syncBuffer
			stdin, stdinW := io.Pipe() // input that never ends while the command runs
			t.Cleanup(func() { stdinW.Close() })
			cmd := remote.Cmd{Argv: []string{"sh", "-c", script}, Stdin: stdin, Stdout: &pid, Stderr: io.Discard}
			if name == "writer" {
				cmd.Stdout, cmd.Stderr = io.Discard, &pid
			}
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx, cmd) }()
			poll(t, t.Context(), 5*time.Second, "command started", func() bool { return strings.HasSuffix(pid.String(), "\n") })
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("%v: want context.Canceled", err)
			}
			id := strings.TrimSpace(pid.String())
			poll(t, t.Context(), 5*time.Second, "remote command "+id+" gone", func() bool {
				_, err := os.Stat("/proc/" + id)
				return err != nil
			})
		})
	}
}

// pausingProxy forwards TCP connections to target until paused: then it stops forwarding (the peer
// goes silent without closing), as a dead network path does.
type pausingProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	paused chan struct{} // closed while not paused
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newPausingProxy(t *testing.T, target string) *pausingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pp := &pausingProxy{ln: ln, target: target, paused: make(chan struct{})}
	close(pp.paused)
	pp.wg.Go(pp.accept)
	t.Cleanup(func() {
		ln.Close()
		pp.mu.Lock()
		for _, c := range pp.conns {
			c.Close()
		}
		pp.mu.Unlock()
		pp.Resume()
		pp.wg.Wait()
	})
	return pp
}

func (pp *pausingProxy) accept() {
	for {
		c, err := pp.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", pp.target)
		if err != nil {
			c.Close()
			continue
		}
		pp.mu.Lock()
		pp.conns = append(pp.conns, c, u)
		pp.mu.Unlock()
		pp.wg.Go(func() { pp.pipe(u, c) })
		pp.wg.Go(func() { pp.pipe(c, u) })
	}
}

func (pp *pausingProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		pp.mu.Lock()
		gate := pp.paused
		pp.mu.Unlock()
		<-gate
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (pp *pausingProxy) Pause() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.paused = make(chan struct{})
}

func (pp *pausingProxy) Resume() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	select {
	case <-pp.paused:
	default:
		close(pp.paused)
	}
}

func TestKeepaliveClosesADeadConnection(t *testing.T) {
	l := shared.Get(t)
	n := l.Node("nats-1")
	pp := newPausingProxy(t, n.SSHAddress())
	cfg := labConfig(l)
	cfg.Keepalive, cfg.KeepaliveMax = 200*time.Millisecond, 3
	cfg.KnownHosts = writeFile(t, "["+"127.0.0.1]:"+portOf(pp.ln.Addr())+" "+strings.SplitN(knownHostsLine(t, l, n.Address().String()), " ", 2)[1]+"\n")
	p, _ := newPool(t, cfg)
	c := client(t, p, n.Name(), pp.ln.Addr().String())
	var started syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- c.Run(t.Context(), remote.Cmd{Argv: []string{"sh", "-c", "echo started; exec sleep 30"}, Stdout: &started})
	}()
	poll(t, t.Context(), 5*time.Second, "command started", func() bool { return started.String() != "" })
	start := time.Now()
	pp.Pause()
	err := <-done
	t.Logf("error after %s: %v", time.Since(start), err)
	if !errors.Is(err, remote.ErrConnectionLost) || !strings.Contains(err.Error(), "keepalives unanswered") {
		t.Errorf("%v: want ErrConnectionLost by keepalive", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("dead connection noticed after %s, want about 0.6-0.8s", d)
	}
	pp.Resume()
	if err := c.Run(t.Context(), remote.Cmd{Argv: []string{"true"}}); err != nil {
		t.Errorf("after the network came back: %v", err)
	}
}

func portOf(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

func TestJumpHost(t *testing.T) {
	l := shared.Get(t)
	cfg := labConfig(l)
	cfg.Jump = "root@" + l.PVE().Address().String()
	p, _ := newPool(t, cfg)
	pve := l.PVE()
	beforePVE := len(pve.SSHSessions())
	var nodes []*remote.SSHNode
	for _, n := range l.Nodes() {
		sn, err := p.Node(cfg.NodeHost(n.Name(), n.Address()), nil)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, sn)
	}
	for i, sn := range nodes {
		var out bytes.Buffer
		if err := sn.Run(t.Context(), remote.Cmd{Argv: []string{"sh", "-c", "echo $CIMDEPLOY_LAB_ADDRESS"}, Stdout: &out}); err != nil {
			t.Fatal(err)
		}
		if want := l.Nodes()[i].Address().String() + "\n"; out.String() != want {
			t.Errorf("%s: %q, want %q", sn.Name(), out.String(), want)
		}
	}
	if got := len(pve.SSHSessions()) - beforePVE; got != 1 {
		t.Errorf("%d connections to the jump host for two nodes, want 1", got)
	}
	chain := closureChain(t, 2)
	if got, err := nodes[1].CopyClosure(t.Context(), chain[1:]); err != nil || len(got.Missing) != 2 {
		t.Errorf("copy through the jump host: %+v, %v", got, err)
	}
}

func TestPassphraseProtectedKey(t *testing.T) {
	l := shared.Get(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	data, err := os.ReadFile(l.ClientKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ssh-keygen", "-q", "-p", "-P", "", "-N", "correct horse", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -p: %v: %s", err, out)
	}
	cfg := labConfig(l)
	cfg.KeyFile = key
	if _, err := remote.NewPool(cfg, remote.Options{}); err == nil || !strings.Contains(err.Error(), "CIMDEPLOY_SSH_KEY_PASSPHRASE_FILE") {
		t.Errorf("encrypted key without passphrase: %v, want an error naming CIMDEPLOY_SSH_KEY_PASSPHRASE_FILE", err)
	}
	cfg.KeyPassphraseFile = writeFile(t, "correct horse\n")
	p, _ := newPool(t, cfg)
	n := l.Node("nats-1")
	if err := client(t, p, n.Name(), n.Address().String()).Run(t.Context(), remote.Cmd{Argv: []string{"true"}}); err != nil {
		t.Error(err)
	}
}

func TestSSHAgent(t *testing.T) {
	l := shared.Get(t)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	var agentOut bytes.Buffer
	agent.Stdout, agent.Stderr = &agentOut, &agentOut
	if err := agent.Start(); err != nil {
		t.Fatalf("ssh-agent: %v", err)
	}
	t.Cleanup(func() {
		_ = agent.Process.Kill()
		_ = agent.Wait()
	})
	poll(t, t.Context(), 5*time.Second, "agent socket", func() bool { _, err := os.Stat(sock); return err == nil })
	add := exec.Command("ssh-add", l.ClientKey())
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v: %s", err, out)
	}
	cfg := labConfig(l)
	cfg.KeyFile, cfg.Agent, cfg.AgentSocket = "", true, sock
	p, _ := newPool(t, cfg)
	n := l.Node("nats-2")
	if err := client(t, p, n.Name(), n.Address().String()).Run(t.Context(), remote.Cmd{Argv: []string{"true"}}); err != nil {
		t.Error(err)
	}
}

func TestRunLog(t *testing.T) {
	l := shared.Get(t)
	p, out := newPool(t, labConfig(l))
	n := l.Node("nats-1")
	c := client(t, p, n.Name(), n.Address().String())
	_ = c.Run(t.Context(), remote.Cmd{Argv: []string{"sh", "-c", "printf 'one\\ntwo\\n\\nlast'; echo warn >&2; exit 4"}})
	for _, want := range []string{"nats-1 stdout| one\n", "nats-1 stdout| two\n", "nats-1 stdout| \n", "nats-1 stdout| last\n",
		"nats-1 stderr| warn\n", "nats-1 exit| `sh -c"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run log does not have %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out.String(), ": exit status 4 after ") {
		t.Errorf("run log has no exit status:\n%s", out)
	}
}

func TestOutputIsCapped(t *testing.T) {
	l := shared.Get(t)
	p, _ := newPool(t, labConfig(l))
	n := l.Node("nats-1")
	c := client(t, p, n.Name(), n.Address().String())
	out, err := c.Output(t.Context(), 1<<20, "head", "-c", "10000000", "/dev/zero")
	if err == nil || !strings.Contains(err.Error(), "standard output over 1048576 bytes") || len(out) != 1<<20 {
		t.Errorf("Output of 10 MB with a 1 MiB cap: %d bytes, %v", len(out), err)
	}
}

func TestNixCopyMethod(t *testing.T) {
	l := shared.Get(t)
	for _, jump := range []string{"", "root@" + l.PVE().Address().String()} {
		t.Run("jump="+jump, func(t *testing.T) {
			cfg := labConfig(l)
			cfg.ClosureCopy, cfg.Jump = remote.CopyNix, jump
			p, _ := newPool(t, cfg)
			n := l.Node("nats-2")
			sn, err := p.Node(cfg.NodeHost(n.Name(), n.Address()), nil)
			if err != nil {
				t.Fatal(err)
			}
			chain := closureChain(t, 3)
			got, err := sn.CopyClosure(t.Context(), chain[2:])
			if err != nil {
				t.Fatal(err)
			}
			if !equalArgv(got.Missing, chain) || got.Method != remote.CopyNix {
				t.Errorf("nix copy: %+v, want %q", got, chain)
			}
			out, err := n.Run(t.Context(), "nix-store --check-validity "+strings.Join(chain, " ")+" && echo valid")
			if err != nil || out != "valid\n" {
				t.Errorf("on the node: %q, %v", out, err)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	kh := writeFile(t, "")
	key := writeFile(t, "")
	cfg, err := remote.LoadConfig(t.Context(), envconfig.MapLookuper(map[string]string{
		"CIMDEPLOY_SSH_KEY_FILE":    key,
		"CIMDEPLOY_SSH_KNOWN_HOSTS": kh,
		"CIMDEPLOY_PROXMOX_HOST":    "pve.example.org",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.User != "root" || cfg.Port != 22 || cfg.ConnectTimeout != 10*time.Second || cfg.Keepalive != 15*time.Second ||
		cfg.ProxmoxStorage != "local" || cfg.TemplateDir != "/var/lib/vz/template/cache" || cfg.ClosureCopy != remote.CopyExport || cfg.MaxSessions != 8 || cfg.KeepaliveMax != 3 || cfg.BootTimeout != 2*time.Minute {
		t.Errorf("defaults: %+v", cfg)
	}
	_, err = remote.LoadConfig(t.Context(), envconfig.MapLookuper(map[string]string{
		"CIMDEPLOY_SSH_CONNECT_TIMEOUT":  "0s",
		"CIMDEPLOY_SSH_KEEPALIVE":        "-1s",
		"CIMDEPLOY_PROXMOX_STORAGE":      "local,x",
		"CIMDEPLOY_SSH_JUMP":             "root@",
		"CIMDEPLOY_CLOSURE_COPY":         "rsync",
		"CIMDEPLOY_PROXMOX_TEMPLATE_DIR": "relative",
	}))
	t.Logf("error: %v", err)
	for _, want := range []string{"no SSH identity", "CIMDEPLOY_SSH_KNOWN_HOSTS is empty", "CIMDEPLOY_SSH_CONNECT_TIMEOUT 0s",
		"CIMDEPLOY_SSH_KEEPALIVE -1s", "CIMDEPLOY_PROXMOX_STORAGE", "CIMDEPLOY_SSH_JUMP", "CIMDEPLOY_CLOSURE_COPY", "CIMDEPLOY_PROXMOX_TEMPLATE_DIR"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q", want)
		}
	}
}
