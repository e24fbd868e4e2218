package rollouttest

import (
	"context"
	"fmt"
	"sync"

	"github.com/cimdeploy/cimdeploy/rollout"
)

// Cluster is a fake NATS cluster of fake nodes: a node's server answers while its node is up, is
// healthy unless it runs a system marked broken, and is clustered with every other answering,
// unbroken server, as routes of a real cluster are. Safe for concurrent use.
type Cluster struct {
	mu     sync.Mutex
	nodes  map[string]*System
	broken map[string]bool
	leader string
	checks map[string]int
	// lagging is how many more Settled calls find a replica catching up (-1: every one); settles
	// counts Settled calls.
	lagging int
	settles int
	// The JetStream meta group (every node added, until RemoveServer), the streams on each server,
	// and whether system account credentials are missing (CanRemove fails).
	meta     map[string]bool
	streams  map[string][]rollout.StreamCopy
	noSystem bool
	// Several clusters (Join): each node's cluster ("" for every node not joined), each cluster's
	// meta leader, and the leaves attached to a hub cluster (Attach).
	clusterOf map[string]string
	leaders   map[string]string
	hubOf     map[string]string
}

var (
	_ rollout.Cluster = (*Cluster)(nil)
	_ rollout.Settler = (*Cluster)(nil)
)

// NewCluster is the cluster of nodes; the first one is the meta leader.
func NewCluster(nodes ...*System) *Cluster {
	c := &Cluster{nodes: map[string]*System{}, broken: map[string]bool{}, checks: map[string]int{},
		meta: map[string]bool{}, streams: map[string][]rollout.StreamCopy{},
		clusterOf: map[string]string{}, leaders: map[string]string{}, hubOf: map[string]string{}}
	for _, n := range nodes {
		c.nodes[n.Name()] = n
		c.meta[n.Name()] = true
	}
	if len(nodes) > 0 {
		c.leader = nodes[0].Name()
	}
	return c
}

// Add adds a node to the cluster (a new node, once provisioned).
func (c *Cluster) Add(n *System) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[n.Name()] = n
	c.meta[n.Name()] = true
}

// Break makes the servers of every node that runs toplevel fail their health check, as a commit with
// bad NATS settings does.
func (c *Cluster) Break(toplevel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.broken[toplevel] = true
}

// SetLeader makes node the JetStream meta leader (of its cluster, after Join).
func (c *Cluster) SetLeader(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name := c.clusterOf[node]; name != "" {
		c.leaders[name] = node
		return
	}
	c.leader = node
}

// Join makes nodes, added already, the members of NATS cluster name: routed to each other only,
// with their own meta leader (the first of them until SetLeader).
func (c *Cluster) Join(name string, nodes ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range nodes {
		c.clusterOf[n] = name
	}
	if len(nodes) > 0 {
		c.leaders[name] = nodes[0]
	}
}

// Attach makes leaves, added already, leaf nodes of hub cluster hub: a leaf's server is healthy with
// one leafnode connection while a member of its hub serves, and is in no meta group.
func (c *Cluster) Attach(hub string, leaves ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range leaves {
		c.hubOf[n] = hub
		delete(c.meta, n)
	}
}

// Checks counts the health checks of node.
func (c *Cluster) Checks(node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks[node]
}

func (c *Cluster) serving(n *System) bool { return n.Up() && !c.broken[n.Running()] && n.Rejoined() }

// Health implements rollout.Cluster.
func (c *Cluster) Health(ctx context.Context, node string, peers int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks[node]++
	n, ok := c.nodes[node]
	if !ok || !n.Up() {
		return fmt.Errorf("/healthz: dial tcp: connection refused")
	}
	if c.broken[n.Running()] {
		return fmt.Errorf("/healthz: 503 {\"status\":\"unavailable\",\"error\":\"JetStream has not established contact with a meta leader\"}")
	}
	if !n.Rejoined() {
		return fmt.Errorf("/healthz: 503 {\"status\":\"unavailable\",\"error\":\"JetStream is not current with the meta leader\"}")
	}
	if hub, leaf := c.hubOf[node]; leaf {
		connections := 0
		for name, other := range c.nodes {
			if _, isLeaf := c.hubOf[name]; !isLeaf && c.clusterOf[name] == hub && c.serving(other) {
				connections = 1 // one remote: connected to one member of the hub
			}
		}
		if connections < peers {
			return fmt.Errorf("/leafz: %d leafnode connections to the hub, want at least %d", connections, peers)
		}
		return nil
	}
	remotes := 0
	for name, other := range c.nodes {
		_, isLeaf := c.hubOf[name]
		if name != node && !isLeaf && c.clusterOf[name] == c.clusterOf[node] && c.serving(other) {
			remotes++
		}
	}
	if remotes != peers {
		return fmt.Errorf("/varz: clustered with %d other servers, want %d", remotes, peers)
	}
	return nil
}

// Leader implements rollout.Cluster.
func (c *Cluster) Leader(ctx context.Context, node string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.nodes[node]; !ok || !n.Up() {
		return "", fmt.Errorf("/jsz: dial tcp: connection refused")
	}
	if name := c.clusterOf[node]; name != "" {
		return c.leaders[name], nil
	}
	return c.leader, nil
}

// Lag makes the next calls Settled calls find a stream replica catching up, as after a server's
// restart under load (-1: it never catches up).
func (c *Cluster) Lag(calls int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lagging = calls
}

// Settles counts the Settled calls.
func (c *Cluster) Settles() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.settles
}

// Settled implements rollout.Settler: every member healthy (Health), then the lag Lag set.
func (c *Cluster) Settled(ctx context.Context, members []string, peers int) error {
	for _, m := range members {
		if err := c.Health(ctx, m, peers); err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.settles++
	if c.lagging != 0 {
		if c.lagging > 0 {
			c.lagging--
		}
		return fmt.Errorf("%s: /jsz: stream $G > EVENTS: replica %s catching up (lag 812)", c.leader, members[len(members)-1])
	}
	return nil
}
