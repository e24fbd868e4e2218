package rollout_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/ssh"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// seedFile writes a new nkey of kind (nkeys.CreateUser, CreateAccount) to a 0600 file and returns
// the file, the public key and the seed.
func seedFile(t *testing.T, create func() (nkeys.KeyPair, error)) (path, public, seed string) {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	s, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(path, append(s, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, pub, string(s)
}

// TestNATSPingWithNkey: with a system user known by its nkey (as the projection writes it), the gate
// authenticates with the seed file and every server answers the ping; a client without a user is
// refused.
func TestNATSPingWithNkey(t *testing.T) {
	t.Parallel()
	path, pub, _ := seedFile(t, nkeys.CreateUser)
	sys, app := server.NewAccount("SYS"), server.NewAccount("app")
	s, err := server.NewServer(&server.Options{
		ServerName: "n1", Host: "127.0.0.1", Port: server.RANDOM_PORT, HTTPHost: "127.0.0.1", HTTPPort: server.RANDOM_PORT,
		NoSigs: true, NoLog: true, SystemAccount: "SYS", Accounts: []*server.Account{sys, app},
		Nkeys: []*server.NkeyUser{{Nkey: pub, Account: sys}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	c := &rollout.NATS{Servers: map[string]rollout.Server{"n1": {Monitor: "http://" + s.MonitorAddr().String(), Client: s.ClientURL()}},
		Timeout: 2 * time.Second, NkeyFile: path}
	names, err := c.Ping(t.Context(), "n1", 1)
	if err != nil || len(names) != 1 || names[0] != "n1" {
		t.Errorf("Ping = %v, %v; want [n1]", names, err)
	}
	if nc, err := nats.Connect(s.ClientURL(), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Error("a client without a user connected")
	} else if !strings.Contains(err.Error(), "Authorization Violation") {
		t.Errorf("anonymous client: %v, want an authorization violation", err)
	}
}

func TestNewNATSNeedsASystemUserWithAccounts(t *testing.T) {
	t.Parallel()
	top := testTopology(2)
	top.Accounts = &topology.Accounts{System: []topology.User{{Name: "cimdeploy", NKey: "U"}}}
	cfg := fastConfig()
	if _, err := rollout.NewNATS(top, cfg); err == nil || !strings.Contains(err.Error(), "CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE") {
		t.Errorf("NewNATS without a system user: %v", err)
	}
	path, _, _ := seedFile(t, nkeys.CreateUser)
	cfg.SystemNkeyFile = path
	n, err := rollout.NewNATS(top, cfg)
	if err != nil || n.NkeyFile != path {
		t.Errorf("NewNATS = %+v, %v", n, err)
	}
	top.Accounts = nil
	if _, err := rollout.NewNATS(top, fastConfig()); err != nil {
		t.Errorf("without accounts no user is needed: %v", err)
	}
}

func TestConfigNkeyFile(t *testing.T) {
	t.Parallel()
	user, _, _ := seedFile(t, nkeys.CreateUser)
	account, _, accountSeed := seedFile(t, nkeys.CreateAccount)
	_, pub, _ := seedFile(t, nkeys.CreateUser)
	public := filepath.Join(t.TempDir(), "public")
	if err := os.WriteFile(public, []byte(pub), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file string
		creds      string
		want       string
	}{
		{name: "a user seed", file: user},
		{name: "an account seed", file: account, want: "not a user's nkey seed"},
		{name: "a public key", file: public, want: "no nkey seed in it"},
		{name: "missing", file: filepath.Join(t.TempDir(), "none"), want: "no such file"},
		{name: "with creds too", file: user, creds: user, want: "set one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := fastConfig()
			cfg.SystemNkeyFile, cfg.SystemCredsFile = tc.file, tc.creds
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want %q", err, tc.want)
			case err != nil && (strings.Contains(err.Error(), accountSeed[:10]) || strings.Contains(err.Error(), pub[:10])):
				t.Errorf("Validate quotes the file: %v", err)
			}
		})
	}
}

// TestConnectWithoutNATSAccess: without a system user for a topology with accounts, Connect still
// gives the nodes (generations and status read them over SSH), every NATS check says why it cannot
// run, and Plan refuses any rollout with that reason (no gate could pass, so --force does not help).
func TestConnectWithoutNATSAccess(t *testing.T) {
	t.Parallel()
	top := testTopology(3)
	top.Accounts = &topology.Accounts{System: []topology.User{{Name: "cimdeploy", NKey: "U"}}}
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	key, kh := filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := remote.NewPool(remote.Config{User: "root", Port: 22, KeyFile: key, KnownHosts: kh,
		ConnectTimeout: time.Second, Keepalive: time.Second, KeepaliveMax: 1, MaxSessions: 1, BootTimeout: time.Second,
		ProxmoxStorage: "local", TemplateDir: "/var/lib/vz/template/cache", ClosureCopy: remote.CopyExport}, remote.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	r, err := rollout.Connect(pool, top, remote.Config{User: "root", Port: 22}, fastConfig(), nil, nil)
	if err != nil {
		t.Fatalf("Connect without a system user: %v", err)
	}
	if len(r.Systems) != 3 {
		t.Errorf("systems %v, want the 3 nodes", r.Systems)
	}
	if err := r.Cluster.Health(t.Context(), "nats-1", 2); !errors.Is(err, rollout.ErrNoNATSAccess) ||
		!strings.Contains(err.Error(), "CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE") {
		t.Errorf("health without access: %v", err)
	}
	_, err = r.Plan(t.Context(), rollout.Request{RunID: "r1", Commit: "b", Targets: []rollout.Target{{Node: "nats-1", Toplevel: built("nats-1", "b")}}, Force: true})
	if !errors.Is(err, rollout.ErrNoNATSAccess) {
		t.Errorf("Plan without access to NATS (forced): %v", err)
	}
	top.Services.NATS = nil
	if _, err := rollout.Connect(pool, top, remote.Config{User: "root", Port: 22}, fastConfig(), nil, nil); err == nil ||
		!strings.Contains(err.Error(), "no NATS service") {
		t.Errorf("Connect of a topology without NATS: %v", err)
	}
}
