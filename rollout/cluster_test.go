package rollout_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cimdeploy/cimdeploy/rollout"
)

// freePort is a TCP port nothing listens on just now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// natsCluster starts n clustered nats-servers with JetStream, monitoring, and a system account user
// sys/pw, and returns them with the NATS Cluster of them (names n1..nN).
func natsCluster(t *testing.T, n int) ([]*server.Server, *rollout.NATS) {
	t.Helper()
	ports := make([]int, n)
	var routes []string
	for i := range ports {
		ports[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	c := &rollout.NATS{Servers: map[string]rollout.Server{}, Timeout: 2 * time.Second, User: "sys", Password: "pw"}
	var servers []*server.Server
	for i := range n {
		s := startNATS(t, fmt.Sprintf("n%d", i+1), ports[i], routes)
		servers = append(servers, s)
		c.Servers[s.Name()] = rollout.Server{Monitor: "http://" + s.MonitorAddr().String(), Client: s.ClientURL()}
	}
	return servers, c
}

// startNATS starts a nats-server named name with JetStream, monitoring, a system account user sys/pw,
// its cluster listener on clusterPort and routes to routes; it is shut down when the test ends.
func startNATS(t *testing.T, name string, clusterPort int, routes []string) *server.Server {
	t.Helper()
	sys, app := server.NewAccount("SYS"), server.NewAccount("APP")
	opts := &server.Options{
		ServerName: name, Host: "127.0.0.1", Port: server.RANDOM_PORT,
		HTTPHost: "127.0.0.1", HTTPPort: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		Cluster:       server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: clusterPort},
		Routes:        server.RoutesFromStr(strings.Join(routes, ",")),
		SystemAccount: "SYS", Accounts: []*server.Account{sys, app},
		Users: []*server.User{{Username: "sys", Password: "pw", Account: sys}, {Username: "app", Password: "pw", Account: app}},
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

// TestNATSWatchSeesARouteForm: a watch on a server that is alone sees the route to a second server
// form (the server's INFO names a new client URL), and its connection goes with stop.
func TestNATSWatchSeesARouteForm(t *testing.T) {
	t.Parallel()
	ports := []int{freePort(t), freePort(t)}
	routes := []string{fmt.Sprintf("nats://127.0.0.1:%d", ports[0]), fmt.Sprintf("nats://127.0.0.1:%d", ports[1])}
	s1 := startNATS(t, "n1", ports[0], routes)
	c := &rollout.NATS{Servers: map[string]rollout.Server{"n1": {Monitor: "http://" + s1.MonitorAddr().String(), Client: s1.ClientURL()}},
		Timeout: 2 * time.Second, User: "sys", Password: "pw"}
	changes, stop := c.Watch(t.Context(), "n1")
	waitFor(t, 10*time.Second, "the watch connected", func() bool { return s1.NumClients() == 1 })
	select {
	case <-changes:
		t.Fatal("a change before any route formed")
	default:
	}
	startNATS(t, "n2", ports[1], routes)
	select {
	case <-changes:
	case <-time.After(20 * time.Second):
		t.Fatal("no change within 20s of the route forming")
	}
	stop()
	waitFor(t, 10*time.Second, "the watch's connection closed", func() bool { return s1.NumClients() == 0 })

	// A watch of a server that refuses it sends nothing and holds nothing.
	wrong := *c
	wrong.Password = "nope"
	changes, stop = wrong.Watch(t.Context(), "n1")
	defer stop()
	select {
	case <-changes:
		t.Fatal("a change from a refused watch")
	case <-time.After(200 * time.Millisecond):
	}
	if n := s1.NumClients(); n != 0 {
		t.Errorf("%d clients on n1 after a refused watch, want 0", n)
	}
}

func TestNATSClusterHealth(t *testing.T) {
	t.Parallel()
	servers, c := natsCluster(t, 3)
	ctx := t.Context()
	var last error
	waitFor(t, 30*time.Second, "cluster formed", func() bool {
		last = nil
		for _, name := range []string{"n1", "n2", "n3"} {
			if err := c.Health(ctx, name, 2); err != nil {
				last = err
			}
		}
		return last == nil
	})
	leader, err := c.Leader(ctx, "n2")
	if err != nil || !slices.Contains([]string{"n1", "n2", "n3"}, leader) {
		t.Errorf("Leader = %q, %v", leader, err)
	}
	names, err := c.Ping(ctx, "n1", 3)
	if err != nil || !slices.Equal(names, []string{"n1", "n2", "n3"}) {
		t.Errorf("Ping = %v, %v", names, err)
	}
	if err := c.Health(ctx, "n1", 3); err == nil || !strings.Contains(err.Error(), "/varz: clustered with 2 other servers, want 3") {
		t.Errorf("Health with one peer too many: %v", err)
	}
	if err := c.Health(ctx, "n9", 2); err == nil {
		t.Error("Health of an unknown node: no error")
	}
	wrong := *c
	wrong.Password = "nope"
	if err := wrong.Health(ctx, "n1", 2); err == nil || !strings.Contains(err.Error(), "system account") {
		t.Errorf("Health with a wrong system password: %v", err)
	}

	// A server goes: the others count one route fewer, and the gate says so.
	servers[2].Shutdown()
	servers[2].WaitForShutdown()
	waitFor(t, 10*time.Second, "route gone", func() bool {
		err := c.Health(ctx, "n1", 2)
		return err != nil && (strings.Contains(err.Error(), "clustered with 1") || strings.Contains(err.Error(), "healthz"))
	})
	if err := c.Health(ctx, "n3", 2); err == nil || !strings.Contains(err.Error(), "/healthz") {
		t.Errorf("Health of a stopped server: %v", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Health(ctx, "n1", 1); err == nil {
		t.Error("Health with a cancelled context: no error")
	}
}

// TestNATSClusterSettled: a cluster with an R3 stream settles once every replica is current; a
// stopped server makes it unsettled, naming the member, and a stream's replica state is read from its
// leader.
func TestNATSClusterSettled(t *testing.T) {
	t.Parallel()
	servers, c, js := jsClusterFormed(t)
	ctx := t.Context()
	members := []string{"n1", "n2", "n3"}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := js.Publish(ctx, fmt.Sprintf("events.%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	var last error
	waitFor(t, 30*time.Second, "cluster settled", func() bool {
		last = c.Settled(ctx, members, 2)
		return last == nil
	})
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("stream info %+v, %v", info, err)
	}

	// A follower of the stream stops: the cluster is not settled, and the message names it.
	var follower *server.Server
	for _, srv := range servers {
		if srv.Name() != info.Cluster.Leader {
			follower = srv
			break
		}
	}
	follower.Shutdown()
	follower.WaitForShutdown()
	err = c.Settled(ctx, members, 2)
	if err == nil || !strings.Contains(err.Error(), follower.Name()+": ") {
		t.Errorf("Settled with %s stopped: %v, want an error naming it", follower.Name(), err)
	}
	// Without it among the members, the remaining two see its replica offline or lagging on the leader.
	var rest []string
	for _, m := range members {
		if m != follower.Name() {
			rest = append(rest, m)
		}
	}
	waitFor(t, 30*time.Second, "the leader reports the stopped replica", func() bool {
		last = c.Settled(ctx, rest, 1)
		return last != nil && strings.Contains(last.Error(), "stream APP > EVENTS: replica "+follower.Name())
	})
	t.Logf("with %s stopped: %v", follower.Name(), last)
}
