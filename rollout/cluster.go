package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// Cluster is the NATS side of the gate: what the cluster's servers say about themselves. NATS
// implements it over the servers' monitoring endpoints and the system account.
type Cluster interface {
	// Health is nil when the server on node is healthy and clustered with peers other servers.
	Health(ctx context.Context, node string, peers int) error
	// Leader is the JetStream meta leader as the server on node knows it ("" when none).
	Leader(ctx context.Context, node string) (string, error)
}

// Server is where a node's nats-server answers.
type Server struct {
	Monitor string // http://10.0.0.11:8222
	Client  string // nats://10.0.0.11:4222
	// Leaf marks a leaf node's server (role nats-leaf): its health is /healthz and its leafnode
	// connections to its hub (/leafz), not routes and a meta leader of its own.
	Leaf bool
}

// NATS is Cluster over HTTP monitoring and, when system account credentials are configured,
// $SYS.REQ.SERVER.PING. Every check opens a short-lived connection: a NATS client held across a
// restart would make its lame duck mode wait the grace period.
type NATS struct {
	Servers map[string]Server
	// Timeout bounds one request.
	Timeout time.Duration
	// NkeyFile (a user nkey seed), CredsFile, or User and Password, authenticate as a system account
	// user; none: no ping.
	NkeyFile       string
	CredsFile      string
	User, Password string
	// CAFile, when set, makes every client connection TLS, verifying the servers against this CA (a
	// cluster whose clients must use TLS: ClusterSecured client_tls).
	CAFile string
	// HTTP is the monitoring client; nil: one without keep-alive (a server may restart any time).
	HTTP *http.Client
}

var _ Cluster = (*NATS)(nil)

// ErrNoNATSAccess: the settings give no way into the topology's NATS servers (no user for its accounts,
// no CA for its TLS). Connect then makes a Cluster whose every check fails with why: commands that only
// read the nodes (generations, status) work without one, and Plan refuses a rollout.
var ErrNoNATSAccess = errors.New("no access to the NATS servers")

// noAccess is the Cluster of ErrNoNATSAccess.
type noAccess struct{ err error }

func (u noAccess) Health(context.Context, string, int) error      { return u.err }
func (u noAccess) Leader(context.Context, string) (string, error) { return "", u.err }

// NewNATS is the cluster of the topology's nodes, with the settings of cfg.
func NewNATS(top *topology.Topology, cfg Config) (*NATS, error) {
	if top.Services.NATS == nil {
		return nil, errors.New("the topology has no NATS service")
	}
	n := &NATS{Servers: map[string]Server{}, Timeout: cfg.HTTPTimeout, NkeyFile: cfg.SystemNkeyFile, CredsFile: cfg.SystemCredsFile, User: cfg.SystemUser}
	if top.Accounts != nil && !n.authenticates() {
		return nil, fmt.Errorf("%w: the topology defines NATS accounts, so its servers refuse clients without a user: "+
			"give the system user's nkey seed (CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE) or credentials (CIMDEPLOY_ROLLOUT_SYSTEM_CREDS_FILE)", ErrNoNATSAccess)
	}
	if top.Security != nil && top.Security.ClientTLS {
		ca, err := clientCA(top, cfg)
		if err != nil {
			return nil, err
		}
		n.CAFile = ca
	}
	if cfg.SystemPasswordFile != "" {
		pw, err := os.ReadFile(cfg.SystemPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("system account password: %w", err)
		}
		n.Password = strings.TrimRight(string(pw), "\r\n")
	}
	for name, node := range top.Nodes {
		if node.Role != "" && !topology.RunsNATS(node.Role) { // a storage or repository-role node: no server
			continue
		}
		n.Servers[name] = Server{
			Monitor: "http://" + netip.AddrPortFrom(node.Address, uint16(top.Services.NATS.MonitorPort)).String(),
			Client:  "nats://" + netip.AddrPortFrom(node.Address, uint16(top.Services.NATS.ClientPort)).String(),
			Leaf:    node.Role == topology.RoleNATSLeaf,
		}
	}
	for name, node := range top.Removed { // still to take out of the cluster (remove.go)
		if node.Address.IsValid() {
			n.Servers[name] = Server{
				Monitor: "http://" + netip.AddrPortFrom(node.Address, uint16(top.Services.NATS.MonitorPort)).String(),
				Client:  "nats://" + netip.AddrPortFrom(node.Address, uint16(top.Services.NATS.ClientPort)).String(),
			}
		}
	}
	return n, nil
}

func (n *NATS) timeout() time.Duration {
	if n.Timeout > 0 {
		return n.Timeout
	}
	return 5 * time.Second
}

func (n *NATS) server(node string) (Server, error) {
	s, ok := n.Servers[node]
	if !ok {
		return s, fmt.Errorf("no NATS server known for node %s", node)
	}
	return s, nil
}

// Health implements Cluster: /healthz answers 200 (on a clustered server: a meta leader is known and
// every replica on it is current), /varz counts exactly peers remotes (servers routed to; not
// /routez num_routes, which counts pooled connections), /jsz names a meta leader and, with system
// account credentials, every server of the cluster answers a ping. The three monitoring requests go
// out at once: a probe takes one round trip, not three.
//
// On a leaf's server (Server.Leaf), peers is the least number of leafnode connections it must have
// (to its hub): /healthz answers 200 and /leafz counts at least peers leafnodes
// (https://docs.nats.io/running-a-nats-service/nats_admin/monitoring#leaf-node-information-leafz).
func (n *NATS) Health(ctx context.Context, node string, peers int) error {
	srv, err := n.server(node)
	if err != nil {
		return err
	}
	if srv.Leaf {
		return n.leafHealth(ctx, srv, peers)
	}
	var (
		wg                  sync.WaitGroup
		healthz, vErr, lErr error
		varz                struct {
			Remotes int `json:"remotes"`
		}
		leader string
	)
	wg.Go(func() { healthz = n.healthz(ctx, srv) })
	wg.Go(func() { vErr = n.getJSON(ctx, srv.Monitor+"/varz", &varz) })
	wg.Go(func() { leader, lErr = n.Leader(ctx, node) })
	wg.Wait()
	switch {
	case healthz != nil:
		return healthz
	case vErr != nil:
		return vErr
	case varz.Remotes != peers:
		return fmt.Errorf("/varz: clustered with %d other servers, want %d", varz.Remotes, peers)
	case lErr != nil:
		return lErr
	case leader == "":
		return errors.New("/jsz: no JetStream meta leader")
	}
	if !n.authenticates() {
		return nil
	}
	names, err := n.Ping(ctx, node, peers+1)
	if err != nil {
		return err
	}
	if len(names) < peers+1 {
		return fmt.Errorf("$SYS.REQ.SERVER.PING: %d servers answered (%s), want %d", len(names), strings.Join(names, ", "), peers+1)
	}
	return nil
}

// healthz is nil when srv's /healthz answers 200.
func (n *NATS) healthz(ctx context.Context, srv Server) error {
	body, code, err := n.get(ctx, srv.Monitor+"/healthz")
	switch {
	case err != nil:
		return err
	case code != http.StatusOK:
		return fmt.Errorf("/healthz: %d %s", code, strings.TrimSpace(string(body)))
	}
	return nil
}

// leafHealth is Health of a leaf's server: /healthz and /leafz, asked at once.
func (n *NATS) leafHealth(ctx context.Context, srv Server, connections int) error {
	var (
		wg             sync.WaitGroup
		healthz, lzErr error
		leafz          struct {
			Leafnodes int `json:"leafnodes"`
		}
	)
	wg.Go(func() { healthz = n.healthz(ctx, srv) })
	wg.Go(func() { lzErr = n.getJSON(ctx, srv.Monitor+"/leafz", &leafz) })
	wg.Wait()
	switch {
	case healthz != nil:
		return healthz
	case lzErr != nil:
		return lzErr
	case leafz.Leafnodes < connections:
		return fmt.Errorf("/leafz: %d leafnode connections to the hub, want at least %d", leafz.Leafnodes, connections)
	}
	return nil
}

// Watcher is a Cluster that can tell the gate when a node's server changed, so that it probes again
// at once instead of after its pause.
type Watcher interface {
	// Watch sends on changes (never blocking: a change already pending is enough) when node's server
	// announces a change of the cluster to its clients; stop ends the watch without waiting (its
	// connection is closed at once, or when its dial ends, within the request timeout). A watch
	// that cannot be set up sends nothing: the gate's pauses still run.
	Watch(ctx context.Context, node string) (changes <-chan struct{}, stop func())
}

var _ Watcher = (*NATS)(nil)

// Watch implements Watcher with a NATS client connection to node's server, opened right away (in the
// background) and closed by stop: nats-server sends its clients a new INFO with the client URLs of
// the cluster whenever a route forms or goes (the client protocol's async INFO,
// https://docs.nats.io/reference/reference-protocols/nats-protocol#info), which nats.go reports to its
// discovered-servers handler. The connection is the node's new server's: it is never held across a
// restart (a client held through lame duck mode makes the server wait its grace period), since the
// gate runs after the activation and stop comes before the next one. It uses the system account's
// credentials when configured (a server with authorization refuses anonymous clients: then only the
// pauses run).
func (n *NATS) Watch(ctx context.Context, node string) (<-chan struct{}, func()) {
	changes := make(chan struct{}, 1)
	srv, err := n.server(node)
	if err != nil {
		return changes, func() {}
	}
	notify := func(*nats.Conn) {
		select {
		case changes <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		opts := []nats.Option{nats.Name("cimdeploy gate watch"), nats.Timeout(n.timeout()), nats.NoReconnect(),
			nats.DiscoveredServersHandler(notify), nats.NoCallbacksAfterClientClose()}
		auth, err := n.authOptions()
		if err != nil {
			return // the pauses do without
		}
		opts = append(opts, auth...)
		nc, err := nats.Connect(srv.Client, opts...)
		if err != nil {
			return // the server refused or is not there yet: the pauses do without
		}
		defer nc.Close()
		<-ctx.Done()
	}()
	return changes, cancel
}

// Leader implements Cluster with /jsz meta_cluster.leader. A server without JetStream has no leader.
func (n *NATS) Leader(ctx context.Context, node string) (string, error) {
	srv, err := n.server(node)
	if err != nil {
		return "", err
	}
	var jsz struct {
		Disabled bool `json:"disabled"`
		Meta     *struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if err := n.getJSON(ctx, srv.Monitor+"/jsz", &jsz); err != nil {
		return "", err
	}
	if jsz.Disabled || jsz.Meta == nil {
		return "", nil
	}
	return jsz.Meta.Leader, nil
}

// Ping asks the cluster, through node's server, who is there ($SYS.REQ.SERVER.PING) and returns the
// names of the servers that answered within the timeout, sorted; it stops waiting once want answered.
func (n *NATS) Ping(ctx context.Context, node string, want int) ([]string, error) {
	srv, err := n.server(node)
	if err != nil {
		return nil, err
	}
	opts := []nats.Option{nats.Name("cimdeploy gate"), nats.Timeout(n.timeout()), nats.NoReconnect()}
	auth, err := n.authOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	nc, err := nats.Connect(srv.Client, opts...)
	if err != nil {
		return nil, fmt.Errorf("system account at %s: %w", srv.Client, err)
	}
	defer nc.Close()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("system account: %w", err)
	}
	if err := nc.PublishRequest("$SYS.REQ.SERVER.PING", inbox, nil); err != nil {
		return nil, fmt.Errorf("$SYS.REQ.SERVER.PING: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout())
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < want {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break // the timeout: whoever answered did
		}
		var pong struct {
			Server struct {
				Name string `json:"name"`
			} `json:"server"`
		}
		if json.Unmarshal(msg.Data, &pong) == nil && pong.Server.Name != "" {
			seen[pong.Server.Name] = true
		}
	}
	names := make([]string, 0, len(seen))
	for name := range seen {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

func (n *NATS) getJSON(ctx context.Context, url string, v any) error {
	body, code, err := n.get(ctx, url)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s: %d %s", endpoint(url), code, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: %w", endpoint(url), err)
	}
	return nil
}

// get fetches url.
func (n *NATS) get(ctx context.Context, url string) ([]byte, int, error) {
	client := n.HTTP
	if client == nil {
		client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", endpoint(url), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", endpoint(url), err)
	}
	return body, resp.StatusCode, nil
}

// endpoint is the path of a monitoring URL, for messages: /varz.
func endpoint(url string) string {
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		return url[i:]
	}
	return url
}

// Settler is a Cluster that can say whether the whole cluster has settled after a node's change:
// every member healthy and clustered, and every replicated stream led, with each replica current and
// caught up. Run waits for it between nodes: a node's gate says the node is back, not that its peers
// have caught up with what it missed, and taking down the next server (perhaps a stream's leader)
// while a replica still catches up leaves the stream short of a quorum of current replicas.
type Settler interface {
	// Settled is nil when every member is healthy with peers others and every stream is settled.
	Settled(ctx context.Context, members []string, peers int) error
}

var _ Settler = (*NATS)(nil)

// Settled implements Settler: Health of every member, and /jsz?accounts=true&streams=true of every
// member, where each stream the member leads must list every replica current, online and without
// lag (a stream's replica state is the leader's view: a follower does not track its peers), and no
// stream may be without a leader. The members are asked at once.
func (n *NATS) Settled(ctx context.Context, members []string, peers int) error {
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			if err := n.Health(ctx, m, peers); err != nil {
				errs[i] = fmt.Errorf("%s: %w", m, err)
				return
			}
			if err := n.streamsSettled(ctx, m); err != nil {
				errs[i] = fmt.Errorf("%s: %w", m, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// streamsSettled checks the streams node's server knows; node is its server name (the projection
// sets serverName to the host name, and the topology names nodes by host name).
func (n *NATS) streamsSettled(ctx context.Context, node string) error {
	jsz, err := n.streamDetails(ctx, node)
	if err != nil {
		return err
	}
	var problems []string
	for _, a := range jsz.Accounts {
		for _, s := range a.Streams {
			c := s.Cluster
			if c == nil || len(c.Replicas) == 0 && c.Leader == "" {
				continue // not replicated
			}
			name := a.Name + " > " + s.Name
			if c.Leader == "" {
				problems = append(problems, "stream "+name+" has no leader")
				continue
			}
			if c.Leader != node {
				continue
			}
			for _, r := range c.Replicas {
				switch {
				case r.Offline:
					problems = append(problems, fmt.Sprintf("stream %s: replica %s offline", name, r.Name))
				case !r.Current || r.Lag > 0:
					problems = append(problems, fmt.Sprintf("stream %s: replica %s catching up (lag %d)", name, r.Name, r.Lag))
				}
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("/jsz: %s", strings.Join(problems, "; "))
	}
	return nil
}
