package rollout_test

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// TestNATSPingOverClientTLS: a server that requires TLS of its clients (ClusterSecured client_tls) and
// knows the system user by its nkey: the gate's ping goes over TLS, verifying the server against the
// CA; without the CA the connection fails, and a CA that did not sign the server's certificate is
// refused.
func TestNATSPingOverClientTLS(t *testing.T) {
	t.Parallel()
	ca, caKey, caPEM, _, err := lab.NewCA("cimdeploy test CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := lab.SignNode(ca, caKey, pkix.Name{CommonName: "n1"}, net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	path, pub, _ := seedFile(t, nkeys.CreateUser)
	sys := server.NewAccount("SYS")
	s, err := server.NewServer(&server.Options{
		ServerName: "n1", Host: "127.0.0.1", Port: server.RANDOM_PORT, HTTPHost: "127.0.0.1", HTTPPort: server.RANDOM_PORT,
		NoSigs: true, NoLog: true, SystemAccount: "SYS", Accounts: []*server.Account{sys},
		Nkeys:     []*server.NkeyUser{{Nkey: pub, Account: sys}},
		TLS:       true,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, otherPEM, _, err := lab.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(otherFile, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	gate := func(caFile string) *rollout.NATS {
		return &rollout.NATS{Servers: map[string]rollout.Server{"n1": {Monitor: "http://" + s.MonitorAddr().String(), Client: s.ClientURL()}},
			Timeout: 2 * time.Second, NkeyFile: path, CAFile: caFile}
	}
	if names, err := gate(caFile).Ping(t.Context(), "n1", 1); err != nil || len(names) != 1 || names[0] != "n1" {
		t.Errorf("Ping over TLS = %v, %v; want [n1]", names, err)
	}
	if _, err := gate("").Ping(t.Context(), "n1", 1); err == nil {
		t.Error("Ping without TLS: the server requires TLS, want an error")
	}
	if _, err := gate(otherFile).Ping(t.Context(), "n1", 1); err == nil {
		t.Error("Ping with another CA: want the server's certificate refused")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Ping with another CA: %v, want a certificate error", err)
	}
}

// TestNewNATSClientTLS: a topology whose clients must use TLS needs the servers' CA: from
// CIMDEPLOY_ROLLOUT_NATS_CA_FILE, or the secrets directory; a missing or empty one is refused, naming
// where it was looked for.
func TestNewNATSClientTLS(t *testing.T) {
	t.Parallel()
	top := testTopology(2)
	top.Security = &topology.Security{ClientTLS: true}
	if _, err := rollout.NewNATS(top, fastConfig()); err == nil || !strings.Contains(err.Error(), "CIMDEPLOY_ROLLOUT_NATS_CA_FILE") {
		t.Errorf("without a CA: %v", err)
	}
	_, _, caPEM, _, err := lab.NewCA("cimdeploy test CA")
	if err != nil {
		t.Fatal(err)
	}
	secrets := t.TempDir()
	if err := os.MkdirAll(filepath.Join(secrets, "nats-1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secrets, "nats-1", "ca.pem"), caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.SecretsDir = secrets
	n, err := rollout.NewNATS(top, cfg)
	if err != nil || n.CAFile != filepath.Join(secrets, "nats-1", "ca.pem") {
		t.Errorf("from the secrets directory: %+v, %v", n, err)
	}
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.NATSCAFile = junk
	if _, err := rollout.NewNATS(top, cfg); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a file without a certificate: %v", err)
	}
	top.Security.ClientTLS = false
	if n, err := rollout.NewNATS(top, fastConfig()); err != nil || n.CAFile != "" {
		t.Errorf("clients without TLS: %+v, %v", n, err)
	}
}
