package rollout_test

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cimdeploy/cimdeploy/rollout"
)

// startLeafServer starts a nats-server named name with monitoring; with listen (not 0) it accepts
// leafnode connections on that port (a hub), with remote (not 0) it is a leaf of the hub there.
func startLeafServer(t *testing.T, name string, listen, remote int) *server.Server {
	t.Helper()
	opts := &server.Options{ServerName: name, Host: "127.0.0.1", Port: server.RANDOM_PORT,
		HTTPHost: "127.0.0.1", HTTPPort: server.RANDOM_PORT, NoSigs: true, NoLog: true}
	if listen != 0 {
		opts.LeafNode = server.LeafNodeOpts{Host: "127.0.0.1", Port: listen}
	}
	if remote != 0 {
		u, err := url.Parse("nats-leaf://127.0.0.1:" + strconv.Itoa(remote))
		if err != nil {
			t.Fatal(err)
		}
		opts.LeafNode.ReconnectInterval = 20 * time.Millisecond
		opts.LeafNode.Remotes = []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return s
}

// TestNATSLeafHealth runs real nats-servers: a leaf's health is /healthz and its leafnode connection
// to the hub (/leafz), refused while the hub is down and given once the connection forms; no
// routes, meta leader or ping are asked of it.
func TestNATSLeafHealth(t *testing.T) {
	t.Parallel()
	hubPort := freePort(t)
	leaf := startLeafServer(t, "leaf", 0, hubPort)
	c := &rollout.NATS{Servers: map[string]rollout.Server{
		"leaf": {Monitor: "http://" + leaf.MonitorAddr().String(), Client: leaf.ClientURL(), Leaf: true}},
		Timeout: 2 * time.Second, User: "sys", Password: "pw"}
	err := c.Health(t.Context(), "leaf", rollout.LeafConnections)
	if err == nil || !strings.Contains(err.Error(), "/leafz: 0 leafnode connections to the hub, want at least 1") {
		t.Fatalf("leaf without its hub: %v", err)
	}
	startLeafServer(t, "hub", hubPort, 0)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for err != nil {
		if time.Now().After(deadline) {
			t.Fatalf("leaf connected to its hub: still %v", err)
		}
		<-tick.C
		err = c.Health(t.Context(), "leaf", rollout.LeafConnections)
	}
}

// TestNewNATSServersByRole: the cluster knows a server for every node that runs NATS, marks the
// leaves', and has none for a storage node (whose gate is its SSH probe only).
func TestNewNATSServersByRole(t *testing.T) {
	t.Parallel()
	top := fleet{clusters: []string{"east"}, members: 3, leaves: 2, storage: 1}.topology()
	c, err := rollout.NewNATS(top, fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Servers) != 5 || c.Servers["east-1"].Leaf || !c.Servers["leaf-east-1"].Leaf {
		t.Errorf("servers %+v: want east-1..3 and two leaves marked as such", c.Servers)
	}
	if _, ok := c.Servers["storage-1"]; ok {
		t.Error("a storage node has a NATS server")
	}
}
