package checkout_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
)

// gitSSH is an ssh server that lets one client key run git-upload-pack, as a git host does.
type gitSSH struct {
	addr    string
	hostKey ssh.PublicKey
	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func newGitSSH(t *testing.T, client ssh.PublicKey) *gitSSH {
	t.Helper()
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if c.User() == "git" && bytes.Equal(key.Marshal(), client.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &gitSSH{addr: ln.Addr().String(), hostKey: signer.PublicKey(), ln: ln}
	s.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, nc)
			s.mu.Unlock()
			s.wg.Go(func() { s.serve(nc, cfg) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *gitSSH) serve(nc net.Conn, cfg *ssh.ServerConfig) {
	defer nc.Close()
	_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		return
	}
	s.wg.Go(func() { ssh.DiscardRequests(reqs) })
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, reqs, err := nch.Accept()
		if err != nil {
			return
		}
		s.wg.Go(func() { s.session(ch, reqs) })
	}
}

func (s *gitSSH) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			req.Reply(false, nil)
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
			req.Reply(false, nil)
			return
		}
		path, ok := strings.CutPrefix(payload.Command, "git-upload-pack ")
		if !ok {
			req.Reply(false, nil)
			return
		}
		req.Reply(true, nil)
		cmd := exec.Command("git-upload-pack", strings.Trim(path, "'"))
		cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
		stdin, err := cmd.StdinPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err == nil {
			s.wg.Go(func() { io.Copy(stdin, ch); stdin.Close() })
			err = cmd.Wait()
		}
		status := uint32(0)
		if err != nil {
			status = 1
		}
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
		return
	}
}

// sshKeyFiles writes a client key and a known_hosts pinning hostKey for addr.
func sshKeyFiles(t *testing.T, priv ed25519.PrivateKey, addr string, hostKey ssh.PublicKey) (keyFile, knownHosts string) {
	t.Helper()
	dir := t.TempDir()
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	knownHosts = filepath.Join(dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, hostKey) + "\n"
	if err := os.WriteFile(knownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return keyFile, knownHosts
}

func TestSSHKeyAndKnownHosts(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	head := o.commit("first", map[string]string{"a": "1"})
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clientPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	srv := newGitSSH(t, clientPub)
	keyFile, knownHosts := sshKeyFiles(t, priv, srv.addr, srv.hostKey)
	url := "ssh://git@" + srv.addr + o.dir

	c, _ := newCache(t)
	src := checkout.Source{URL: url, SSHKeyFile: keyFile, KnownHostsFile: knownHosts}
	ws := mustCheckout(t, c, src, "main")
	if ws.Commit != head {
		t.Errorf("Commit = %s, want %s", ws.Commit, head)
	}
	wantTree(t, ws.Dir, map[string]string{"a": "1"})

	// A host key other than the pinned one is refused.
	_, otherHost, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(otherHost)
	_, wrongHosts := sshKeyFiles(t, priv, srv.addr, otherSigner.PublicKey())
	_, err = c.Resolve(t.Context(), checkout.Source{URL: url, SSHKeyFile: keyFile, KnownHostsFile: wrongHosts}, "main")
	if err == nil || !strings.Contains(err.Error(), "key") {
		t.Errorf("Resolve with a wrong known host = %v, want a host key error", err)
	}
	// A key the server does not know is refused.
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	otherKey, _ := sshKeyFiles(t, otherPriv, srv.addr, srv.hostKey)
	if _, err := c.Resolve(t.Context(), checkout.Source{URL: url, SSHKeyFile: otherKey, KnownHostsFile: knownHosts}, "main"); err == nil {
		t.Error("Resolve with an unknown client key succeeded")
	}
}
