package rollout_test

import (
	"bytes"
	"context"
	"crypto/x509/pkix"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// TestLabSecretsRotatedWithTheSwitch: new node certificates of the lab CA in a secrets directory of
// the test's own. A directory lacking one node's key refuses the rollout before any node is touched;
// the full one is installed on every node (0400, owner nats) before its switch, and the switched
// nodes form their TLS routes again with the new certificates (the gate).
func TestLabSecretsRotatedWithTheSwitch(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	w := newLabWorld(t)
	ca, caKey, err := w.l.LoadCA()
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(w.l.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, n := range w.l.Nodes() {
		cert, key, err := lab.SignNode(ca, caKey, pkix.Name{CommonName: "nats-route", Organization: []string{"cimdeploy-lab"}}, n.Address().AsSlice())
		if err != nil {
			t.Fatal(err)
		}
		writeFiles(t, filepath.Join(dir, n.Name()), map[string][]byte{topology.SecretCA: caPEM, topology.SecretCert: cert, topology.SecretKey: key})
	}
	tops := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = 80 << 20 })

	// One key missing: refused, nothing switched.
	partial := t.TempDir()
	for _, n := range w.l.Nodes() {
		files := map[string][]byte{}
		for _, f := range topology.SecretFiles {
			if n.Name() == "nats-2" && f == topology.SecretKey {
				continue
			}
			data, _ := os.ReadFile(filepath.Join(dir, n.Name(), f))
			files[f] = data
		}
		writeFiles(t, filepath.Join(partial, n.Name()), files)
	}
	w.r.Secrets = rollout.NewSecrets(w.top, partial, "nats")
	_, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-secrets-missing", Commit: "s1", Targets: w.targets(tops, "s1")})
	if res.Status != rollout.StatusRefused || !strings.Contains(res.Error, "node nats-2") || !strings.Contains(res.Error, topology.SecretKey) {
		t.Fatalf("rollout %s %q: want refused, naming nats-2 and %s", res.Status, res.Error, topology.SecretKey)
	}
	for _, n := range w.l.Nodes() {
		if n.CurrentSystem() != w.baseline[n.Name()] {
			t.Errorf("%s was switched by a refused rollout", n.Name())
		}
	}

	// All there: installed, then switched.
	w.r.Secrets = rollout.NewSecrets(w.top, dir, "nats")
	_, res = w.rollout(ctx, t, rollout.Request{RunID: "lab-secrets", Commit: "s2", Targets: w.targets(tops, "s2")})
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s", res.Status, res.Error)
	}
	nats, err := user.Lookup("nats")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range w.l.Nodes() {
		for _, f := range topology.SecretFiles {
			want, _ := os.ReadFile(filepath.Join(dir, n.Name(), f))
			file := filepath.Join(n.Dir(), "state", "var", "lib", "nats", "secrets", f)
			got, err := os.ReadFile(file)
			st, serr := os.Stat(file)
			if err != nil || serr != nil || !bytes.Equal(got, want) || st.Mode().Perm() != 0o400 ||
				strconv.Itoa(int(st.Sys().(*syscall.Stat_t).Uid)) != nats.Uid {
				t.Errorf("%s on %s: %v %v, mode %v: want the new file, 0400, owner nats", f, n.Name(), err, serr, st)
			}
		}
	}
	if strings.Contains(w.log.String(), "PRIVATE KEY") {
		t.Errorf("a key in the rollout log")
	}
}

func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
