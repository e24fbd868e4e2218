package rollouttest

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cimdeploy/cimdeploy/rollout"
)

var _ rollout.MetaRemover = (*Cluster)(nil)

// StreamCopy is rollout.StreamCopy.
type StreamCopy = rollout.StreamCopy

// SetStreams says which streams node's server holds (rollout.MetaRemover's StreamsOn).
func (c *Cluster) SetStreams(node string, streams ...StreamCopy) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.streams[node] = streams
}

// WithoutSystemAccount makes CanRemove and RemoveServer fail as without system account credentials.
func (c *Cluster) WithoutSystemAccount() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noSystem = true
}

// InMeta reports whether node is in the JetStream meta group.
func (c *Cluster) InMeta(node string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.meta[node]
}

func (c *Cluster) answering(node string) error {
	if n, ok := c.nodes[node]; !ok || !n.Up() {
		return fmt.Errorf("%s: /jsz: dial tcp: connection refused", node)
	}
	return nil
}

// CanRemove implements rollout.MetaRemover.
func (c *Cluster) CanRemove() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.noSystem {
		return errors.New("taking a server out of the JetStream meta group needs the NATS system account")
	}
	return nil
}

// StreamsOn implements rollout.MetaRemover.
func (c *Cluster) StreamsOn(ctx context.Context, node string) ([]StreamCopy, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.answering(node); err != nil {
		return nil, err
	}
	return slices.Clone(c.streams[node]), nil
}

// MetaPeers implements rollout.MetaRemover: the meta group of via's cluster.
func (c *Cluster) MetaPeers(ctx context.Context, via string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.answering(via); err != nil {
		return nil, err
	}
	var peers []string
	for n := range c.meta {
		if c.clusterOf[n] == c.clusterOf[via] { // each cluster its own meta group (Join)
			peers = append(peers, n)
		}
	}
	slices.Sort(peers)
	return peers, nil
}

// RemoveServer implements rollout.MetaRemover: as nats-server, a server that is no member is an error.
func (c *Cluster) RemoveServer(ctx context.Context, via, server string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.noSystem:
		return errors.New("needs the NATS system account")
	case c.answering(via) != nil:
		return c.answering(via)
	case !c.meta[server] || c.clusterOf[server] != c.clusterOf[via]:
		return fmt.Errorf("$JS.API.SERVER.REMOVE %s: server is not a member of the cluster (code 400, err_code 10044)", server)
	}
	delete(c.meta, server)
	return nil
}
