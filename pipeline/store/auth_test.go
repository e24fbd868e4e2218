package store

import (
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
)

// TestExternalClusterWithNkeyUserAndTLS: an external cluster whose clients must use TLS and
// authenticate as an nkey user (as the clusters cimdeploy's projection makes): the store opens with
// the user's seed file and the servers' CA, and is refused without either, with errors that name the
// file and never hold the seed.
func TestExternalClusterWithNkeyUserAndTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, caKey, caPEM, _, err := lab.NewCA("external test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := lab.SignNode(ca, caKey, pkix.Name{CommonName: "external"}, net.ParseIP("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	caFile, certFile, keyFile := write("ca.pem", caPEM), write("server.pem", cert), write("server-key.pem", key)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	pub, _ := user.PublicKey()
	seedFile := write("store.nk", seed)
	tlsConf, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: caFile, Timeout: 2})
	if err != nil {
		t.Fatal(err)
	}
	srv := startServerWith(t, func(o *server.Options) {
		o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
		o.TLS, o.TLSConfig, o.TLSTimeout = true, tlsConf, 2
	})
	url := srv.ClientURL()

	s := open(t, Config{URL: url, NkeyFile: seedFile, CAFile: caFile, Timeout: 5 * time.Second})
	if _, err := s.Runs(t.Context(), 10); err != nil {
		t.Errorf("runs through the nkey user over TLS: %v", err)
	}

	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no user", cfg: Config{URL: url, CAFile: caFile}, want: "connect to nats"},
		{name: "another user", cfg: Config{URL: url, NkeyFile: write("other.nk", otherSeed), CAFile: caFile}, want: "connect to nats"},
		{name: "no CA", cfg: Config{URL: url, NkeyFile: seedFile}, want: "connect to nats"},
		{name: "not a seed", cfg: Config{URL: url, NkeyFile: write("bad.nk", []byte("SUNOTASEED\n")), CAFile: caFile}, want: "bad.nk"},
	} {
		tc.cfg.Timeout = 2 * time.Second
		s, err := Open(t.Context(), tc.cfg, testLogger(t))
		if err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), string(seed)) || strings.Contains(err.Error(), string(otherSeed)) {
			t.Errorf("%s: %v, want it to say %q and hold no seed", tc.name, err, tc.want)
		}
	}
}
