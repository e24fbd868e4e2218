package projection_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// testCA is a CA the test signs the nodes' certificates with (lab.NewCA).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	cert, key, certPEM, _, err := lab.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert, key, certPEM}
}

// nodeSecrets writes a secrets directory of node as topology.SecretFiles and the leaf certificates
// lay it out: trusted's certificate, a node certificate for ip signed by trusted, and, for a leaf, its
// certificates for its accounts signed by leafCA (trusted, or another CA to be refused).
func nodeSecrets(t *testing.T, top *topology.Topology, node string, ip net.IP, trusted, leafCA testCA) string {
	t.Helper()
	dir := t.TempDir()
	cert, key, err := lab.SignNode(trusted.cert, trusted.key, routeSubject(t, top), ip)
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.MkdirAll(filepath.Join(dir, node), 0o700))
	for name, data := range map[string][]byte{topology.SecretCA: trusted.pem, topology.SecretCert: cert, topology.SecretKey: key} {
		must(t, os.WriteFile(filepath.Join(dir, node, name), data, 0o600))
	}
	if top.Nodes[node].Role == topology.RoleNATSLeaf {
		// lab.WriteLeafCerts for this leaf alone, with leafCA.
		one := *top
		one.Nodes = map[string]topology.Node{node: top.Nodes[node]}
		must(t, lab.WriteLeafCerts(dir, &one, leafCA.cert, leafCA.key))
	}
	for _, f := range top.SecretFiles(node) {
		if _, err := os.Stat(filepath.Join(dir, node, f)); err != nil {
			t.Fatalf("secret %s of %s: %v", f, node, err)
		}
	}
	return filepath.Join(dir, node)
}

// withSecrets is conf with the secrets directory's paths moved to dir.
func withSecrets(t *testing.T, conf map[string]any, secretsDir, dir string) map[string]any {
	t.Helper()
	data, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.ReplaceAll(data, []byte(`"`+secretsDir+`/`), []byte(`"`+dir+`/`))
	var out map[string]any
	must(t, json.Unmarshal(data, &out))
	return out
}

// TestSecuredFleetBuilds builds every node of the secured fleet with accounts and leaves with real Nix
// against the stub nixpkgs, checks each NATS server's configuration with the real `nats-server -t`
// (the build cannot: the secrets are files on the node, validateConfig = false) with its secrets in
// place, then runs a hub and a leaf from the built configurations.
func TestSecuredFleetBuilds(t *testing.T) {
	t.Parallel()
	dir := fleetDir(t)
	top := securedFleet(t)
	if _, err := projection.Write(dir, render(t, top, projection.Options{})); err != nil {
		t.Fatal(err)
	}
	names := top.NodeNames()
	args := []string{"nix", "build", "--offline", "--no-link", "--json", "--no-write-lock-file",
		"--override-input", "nixpkgs", "path:" + stubNixpkgs(t)}
	for _, name := range names {
		args = append(args, ".#nixosConfigurations."+name+".config.system.build.toplevel")
	}
	var built []struct {
		Outputs struct{ Out string }
	}
	if err := json.Unmarshal(nix(t, dir, args...), &built); err != nil || len(built) != len(names) {
		t.Fatalf("nix build: %v, %d results for %d nodes", err, len(built), len(names))
	}
	ca := newTestCA(t, "cluster CA")
	conf := map[string]map[string]any{}
	for i, name := range names {
		c := natsConf(t, built[i].Outputs.Out)
		if topology.RunsNATS(top.Nodes[name].Role) != (c != nil) {
			t.Fatalf("%s (role %s): NATS configuration %v", name, top.Nodes[name].Role, c)
		}
		if c == nil {
			continue
		}
		conf[name] = c
		secrets := nodeSecrets(t, top, name, net.IP(top.Nodes[name].Address.AsSlice()), ca, ca)
		path := filepath.Join(t.TempDir(), "nats.json")
		must(t, os.WriteFile(path, confJSON(t, withSecrets(t, c, top.Security.SecretsDir, secrets)), 0o600))
		if out, err := exec.CommandContext(t.Context(), "nats-server", "-t", "-c", path).CombinedOutput(); err != nil {
			t.Errorf("%s: nats-server -t: %v\n%s", name, err, out)
		}
	}
	if len(conf) != 8 {
		t.Errorf("%d NATS configurations, want 8 (two clusters of three, two leaves)", len(conf))
	}
	if _, ok := conf["edge-1"]["leafnodes"]; ok {
		t.Errorf("edge-1, no hub, listens for leaves: %v", conf["edge-1"]["leafnodes"])
	}
	t.Run("hub and leaf with TLS and accounts", func(t *testing.T) {
		securedHubAndLeaf(t, top, ca, conf["nats-1"], conf["leaf-a1"], conf["leaf-a2"], conf["leaf-a2"])
	})
}

// securedHubAndLeaf runs the built hub and leaf configurations with the real nats-server on loopback
// (the hub alone, without its routes) with certificates of the cluster's CA: the leaf connects once per
// account (SYS, billing, cim), a user of the cim account connected to the leaf publishes a message a
// user of cim on the hub receives, a user of billing on the hub does not, a leaf whose certificates
// another CA signed is refused at the TLS handshake, and one presenting a member's certificate (the
// cluster's CA, the route subject) is refused as no leafnode user.
func securedHubAndLeaf(t *testing.T, top *topology.Topology, ca testCA, hub, leaf, rogue, impostor map[string]any) {
	hubAddr, leafAddr, rogueAddr, impostorAddr := loopbackAddr(), loopbackAddr(), loopbackAddr(), loopbackAddr()
	const clientPort, monitorPort, leafPort = 4222, 8222, 7422
	secretsDir := top.Security.SecretsDir
	hub = withSecrets(t, hub, secretsDir, nodeSecrets(t, top, "nats-1", net.ParseIP(hubAddr), ca, ca))
	leaf = withSecrets(t, leaf, secretsDir, nodeSecrets(t, top, "leaf-a1", net.ParseIP(leafAddr), ca, ca))
	rogue = withSecrets(t, rogue, secretsDir, nodeSecrets(t, top, "leaf-a2", net.ParseIP(rogueAddr), ca, newTestCA(t, "another CA")))
	// The impostor presents the cluster CA's node certificate (the route subject) on every remote.
	impostorSecrets := nodeSecrets(t, top, "leaf-a2", net.ParseIP(impostorAddr), ca, ca)
	impostor = withSecrets(t, impostor, secretsDir, impostorSecrets)
	for _, r := range impostor["leafnodes"].(map[string]any)["remotes"].([]any) {
		r.(map[string]any)["tls"].(map[string]any)["cert_file"] = filepath.Join(impostorSecrets, topology.SecretCert)
	}

	// A user of each domain account, on every server: the fixtures' users' seeds are not the test's.
	users := map[string]nkeys.KeyPair{}
	for _, account := range []string{"cim", "billing"} {
		kp, err := nkeys.CreateUser()
		must(t, err)
		pub, err := kp.PublicKey()
		must(t, err)
		users[account] = kp
		for _, c := range []map[string]any{hub, leaf, rogue, impostor} {
			acc := c["accounts"].(map[string]any)[account].(map[string]any)
			acc["users"] = append(acc["users"].([]any), map[string]any{"nkey": pub})
		}
	}

	// The fixtures' accounts reserve 1 GiB + 256 MiB of memory, more than the servers' 1 GiB
	// max_memory_store: nats-server refuses to enable their JetStream ("insufficient memory resources").
	for _, c := range []map[string]any{hub, leaf, rogue, impostor} {
		c["jetstream"].(map[string]any)["max_memory_store"] = 2 << 30
	}
	delete(hub, "cluster")
	delete(hub, "http_port")
	hub["host"], hub["port"], hub["http"] = hubAddr, clientPort, hubAddr+":"+strconv.Itoa(monitorPort)
	ln := hub["leafnodes"].(map[string]any)
	ln["host"], ln["port"] = hubAddr, leafPort
	hub["jetstream"].(map[string]any)["store_dir"] = t.TempDir()
	for c, addr := range map[*map[string]any]string{&leaf: leafAddr, &rogue: rogueAddr, &impostor: impostorAddr} {
		(*c)["host"], (*c)["port"], (*c)["http"] = addr, clientPort, addr+":"+strconv.Itoa(monitorPort)
		delete(*c, "http_port")
		for _, r := range (*c)["leafnodes"].(map[string]any)["remotes"].([]any) {
			r.(map[string]any)["urls"] = []string{fmt.Sprintf("nats-leaf://%s:%d", hubAddr, leafPort)}
		}
		(*c)["jetstream"].(map[string]any)["store_dir"] = t.TempDir()
	}
	hubLog := startNATS(t, hub)
	startNATS(t, leaf)

	// The hub has the leaf's three connections, each in its account; so has the leaf.
	type leafz struct {
		Leafs []struct{ Account string } `json:"leafs"`
	}
	accounts := func(l leafz) []string {
		var out []string
		for _, c := range l.Leafs {
			out = append(out, c.Account)
		}
		slices.Sort(out)
		return out
	}
	want := top.LeafAccounts()
	for _, addr := range []string{hubAddr, leafAddr} {
		var l leafz
		poll(t, fmt.Sprintf("http://%s:%d/leafz", addr, monitorPort), &l, func() bool { return len(l.Leafs) == len(want) })
		if got := accounts(l); !slices.Equal(got, want) {
			t.Errorf("%s: leafnode connections in %v, want %v", addr, got, want)
		}
	}
	var jsz struct {
		Config struct{ Domain string } `json:"config"`
	}
	poll(t, fmt.Sprintf("http://%s:%d/jsz", leafAddr, monitorPort), &jsz, func() bool { return jsz.Config.Domain != "" })
	if jsz.Config.Domain != "leaf-a1" {
		t.Errorf("the leaf's JetStream domain is %q", jsz.Config.Domain)
	}

	// A message of cim published on the leaf reaches cim's subscriber on the hub, not billing's.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	must(t, os.WriteFile(caFile, ca.pem, 0o600))
	connect := func(addr, account string) *nats.Conn {
		kp := users[account]
		pub, err := kp.PublicKey()
		must(t, err)
		nc, err := nats.Connect(fmt.Sprintf("tls://%s:%d", addr, clientPort), nats.RootCAs(caFile),
			nats.Nkey(pub, kp.Sign), nats.Timeout(5*time.Second))
		if err != nil {
			t.Fatalf("connect to %s as a user of %s: %v", addr, account, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	cimSub, err := connect(hubAddr, "cim").SubscribeSync("cim.leafsec")
	must(t, err)
	billingSub, err := connect(hubAddr, "billing").SubscribeSync(">")
	must(t, err)
	pub := connect(leafAddr, "cim")
	deadline := time.Now().Add(20 * time.Second)
	for {
		// The hub's interest reaches the leaf asynchronously: publish until the message arrives.
		must(t, pub.Publish("cim.leafsec", []byte("from the leaf")))
		msg, err := cimSub.NextMsg(200 * time.Millisecond)
		if err == nil {
			if string(msg.Data) != "from the leaf" {
				t.Errorf("hub received %q", msg.Data)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message from the leaf on the hub after 20s: %v", err)
		}
	}
	if msg, err := billingSub.NextMsg(100 * time.Millisecond); err == nil {
		t.Errorf("billing's user on the hub received %s: %q", msg.Subject, msg.Data)
	}

	// A leaf whose certificates another CA signed: the hub refuses the handshake, and keeps the one leaf.
	startNATS(t, rogue)
	deadline = time.Now().Add(20 * time.Second)
	for !strings.Contains(hubLog.String(), "TLS leafnode handshake error") {
		if time.Now().After(deadline) {
			t.Fatalf("the hub logged no refused leafnode handshake after 20s")
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	// The rogue leaf's Go TLS client offers no certificate that a CA the hub names in its certificate
	// request (its ca_file) did not sign (crypto/tls, CertificateRequestInfo.SupportsCertificate), so the
	// hub sees none; a client forcing it through would fail the hub's verification instead.
	if log := hubLog.String(); !strings.Contains(log, "TLS leafnode handshake error: tls: client didn't provide a certificate") &&
		!strings.Contains(log, "certificate signed by unknown authority") {
		t.Errorf("the hub refused the leaf for another reason:\n%s", log)
	}

	// A leaf presenting a certificate of the cluster's CA whose subject no leafnode user names (a
	// member's): the handshake passes, the authorization fails (nats-server 2.9 logs "authentication
	// error" for a leafnode user it cannot map).
	startNATS(t, impostor)
	deadline = time.Now().Add(20 * time.Second)
	for !strings.Contains(hubLog.String(), "authentication error") {
		if time.Now().After(deadline) {
			t.Fatalf("the hub logged no refused leafnode user after 20s")
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	var l leafz
	poll(t, fmt.Sprintf("http://%s:%d/leafz", hubAddr, monitorPort), &l, func() bool { return true })
	if got := accounts(l); !slices.Equal(got, want) {
		t.Errorf("after the refused leaf, the hub's leafnode connections are in %v, want %v", got, want)
	}
}

// natsLog is a running nats-server's output.
type natsLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *natsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *natsLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startNATS runs nats-server with conf until the test ends; its output is logged when the test fails.
func startNATS(t *testing.T, conf map[string]any) *natsLog {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	must(t, os.WriteFile(path, confJSON(t, conf), 0o600))
	log := &natsLog{}
	cmd := exec.Command("nats-server", "-c", path)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("nats-server %s:\n%s", conf["server_name"], log.String())
		}
	})
	return log
}

// routeSubject is testdata/secured's route subject as a certificate's.
func routeSubject(t *testing.T, top *topology.Topology) pkix.Name {
	t.Helper()
	if top.Security.RouteSubject != "CN=nats-route,O=cim" {
		t.Fatalf("route subject %s, want testdata/secured's CN=nats-route,O=cim", top.Security.RouteSubject)
	}
	return pkix.Name{CommonName: "nats-route", Organization: []string{"cim"}}
}

// confJSON is conf as nats-server reads it: JSON without Go's \u escapes of <, > and & (subjects such
// as billing.>), which nats-server's parser refuses.
func confJSON(t *testing.T, conf map[string]any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	must(t, enc.Encode(conf))
	return b.Bytes()
}
