package remote_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// clientKey writes a new ed25519 key pair for the client and returns the private key file and the
// public key.
func clientKey(t *testing.T) (string, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return file, sshPub
}

// odd is an SSH server in the test that does what sshd never does on demand: it ends a session
// without an exit status ("no-exit-status"), or with a signal ("signal").
type odd struct {
	ln     net.Listener
	hostPK ssh.PublicKey
	wg     sync.WaitGroup
}

func startOdd(t *testing.T, client ssh.PublicKey) *odd {
	t.Helper()
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if bytes.Equal(k.Marshal(), client.Marshal()) {
			return nil, nil
		}
		return nil, errors.New("unknown key")
	}}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &odd{ln: ln, hostPK: signer.PublicKey()}
	var conns sync.Map
	o.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(nc, true)
			o.wg.Go(func() { o.serve(nc, cfg) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		o.wg.Wait()
	})
	return o
}

func (o *odd) serve(nc net.Conn, cfg *ssh.ServerConfig) {
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		nc.Close()
		return
	}
	defer sc.Close()
	o.wg.Go(func() { ssh.DiscardRequests(reqs) })
	for nch := range chans {
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		o.wg.Go(func() {
			defer ch.Close()
			for req := range creqs {
				if req.Type != "exec" {
					req.Reply(false, nil)
					continue
				}
				var exec struct{ Command string }
				_ = ssh.Unmarshal(req.Payload, &exec)
				req.Reply(true, nil)
				switch exec.Command {
				case "no-exit-status":
					fmt.Fprintln(ch, "bye")
				case "signal":
					fmt.Fprintln(ch.Stderr(), "terminated")
					_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
						Signal     string
						CoreDumped bool
						Error      string
						Lang       string
					}{"TERM", false, "", ""}))
				}
				return
			}
		})
	}
}

func TestSessionWithoutExitStatusOrWithSignal(t *testing.T) {
	key, pub := clientKey(t)
	o := startOdd(t, pub)
	addr := o.ln.Addr().String()
	cfg := remote.Config{User: "root", Port: 22, KeyFile: key, ConnectTimeout: 5 * time.Second, Keepalive: time.Second,
		KeepaliveMax: 3, MaxSessions: 4, ProxmoxStorage: "local", TemplateDir: "/var/lib/vz/template/cache",
		BootTimeout: time.Second, ClosureCopy: remote.CopyExport,
		KnownHosts: writeFile(t, knownhosts.Line([]string{addr}, o.hostPK)+"\n")}
	p, _ := newPool(t, cfg)
	c := client(t, p, "odd", addr)
	err := c.Run(t.Context(), remote.Cmd{Argv: []string{"no-exit-status"}})
	t.Logf("error: %v", err)
	if !errors.Is(err, remote.ErrNoExitStatus) || errors.Is(err, remote.ErrConnectionLost) {
		t.Errorf("%v: want ErrNoExitStatus", err)
	}
	err = c.Run(t.Context(), remote.Cmd{Argv: []string{"signal"}})
	t.Logf("error: %v", err)
	var ee *remote.ExitError
	if !errors.As(err, &ee) || ee.Signal != "TERM" || ee.Code != -1 || !strings.Contains(err.Error(), "killed by signal TERM: terminated") {
		t.Errorf("%v: want an *ExitError with signal TERM", err)
	}
}

// TestHostKeyAlgorithmsFromKnownHosts runs an sshd with an ECDSA and an Ed25519 host key; known_hosts
// knows only the Ed25519 one. Go's SSH client prefers ECDSA, so without HostKeyAlgorithms taken from
// known_hosts the server shows its ECDSA key and the host looks changed.
func TestHostKeyAlgorithmsFromKnownHosts(t *testing.T) {
	for _, prog := range []string{"/usr/sbin/sshd", "unshare", "ssh-keygen"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s: %v (install openssh-server, util-linux)", prog, err)
		}
	}
	dir := t.TempDir()
	for _, typ := range []string{"ed25519", "ecdsa"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", typ, "-N", "", "-f", filepath.Join(dir, "host_"+typ)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	key, pub := clientKey(t)
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(pub), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	config := fmt.Sprintf("ListenAddress %s\nHostKey %s/host_ecdsa\nHostKey %s/host_ed25519\nAuthorizedKeysFile %s/authorized_keys\n"+
		"PidFile none\nStrictModes no\nUsePAM no\nUseDNS no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"+
		"PermitRootLogin prohibit-password\n", addr, dir, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd wants /run/sshd: give it a /run of its own in a private mount namespace.
	sshd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
		`mount -t tmpfs cimdeploy-test /run && mkdir /run/sshd && exec /usr/sbin/sshd -D -e -f "$1"`, "sh", filepath.Join(dir, "sshd_config"))
	var log syncBuffer
	sshd.Stdout, sshd.Stderr = &log, &log
	if err := sshd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sshd.Process.Kill()
		_ = sshd.Wait()
	})
	poll(t, t.Context(), 10*time.Second, "sshd listening ("+log.String()+")", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	edPub, err := os.ReadFile(filepath.Join(dir, "host_ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(edPub))
	known := writeFile(t, knownhosts.Normalize(addr)+" "+f[0]+" "+f[1]+"\n")

	// Without HostKeyAlgorithms: the ECDSA key, a mismatch.
	cb, err := knownhosts.New(known)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := loadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: cb, Timeout: 5 * time.Second})
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) || len(ke.Want) != 1 {
		t.Fatalf("plain x/crypto/ssh client: %v, want a key mismatch (this test relies on it)", err)
	}

	cfg := remote.Config{User: "root", Port: 22, KeyFile: key, KnownHosts: known, ConnectTimeout: 5 * time.Second, Keepalive: time.Second,
		KeepaliveMax: 3, MaxSessions: 4, ProxmoxStorage: "local", TemplateDir: "/var/lib/vz/template/cache",
		BootTimeout: time.Second, ClosureCopy: remote.CopyExport}
	p, _ := newPool(t, cfg)
	var out bytes.Buffer
	if err := client(t, p, "two-keys", addr).Run(t.Context(), remote.Cmd{Argv: []string{"echo", "ok"}, Stdout: &out}); err != nil || out.String() != "ok\n" {
		t.Errorf("remote client: %q, %v; want the Ed25519 key asked for and accepted", out.String(), err)
	}
}

func loadSigner(file string) (ssh.Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return ssh.ParsePrivateKey(data)
}
