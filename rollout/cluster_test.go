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
		sys, app := server.NewAccount("SYS"), server.NewAccount("APP")
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: server.RANDOM_PORT,
			HTTPHost: "127.0.0.1", HTTPPort: server.RANDOM_PORT,
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
			Cluster:       server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: ports[i]},
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
		servers = append(servers, s)
		c.Servers[opts.ServerName] = rollout.Server{Monitor: "http://" + s.MonitorAddr().String(), Client: s.ClientURL()}
	}
	return servers, c
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
