package fleet

import (
	"context"
	"sync"

	"github.com/cimdeploy/cimdeploy/deploy"
)

// Opener opens the deployed cluster: deploy.Deployer's OpenCluster, or deploy.OpenCluster over a
// configuration.
type Opener func(ctx context.Context) (*deploy.Cluster, error)

// Observer observes the fleet again and again over one open cluster (its SSH connections are kept
// between observations, and re-made when they broke). It opens the cluster at the first observation
// and again when the desired commit changed since (a deploy may have added or removed nodes). It is
// safe for concurrent use; observations take turns. Close it.
type Observer struct {
	open Opener
	opts Options

	mu        sync.Mutex
	cluster   *deploy.Cluster
	openedFor string // the desired commit when the cluster was opened
}

// NewObserver observes the clusters open opens, with opts.
func NewObserver(open Opener, opts Options) *Observer {
	return &Observer{open: open, opts: opts}
}

// Observe observes every node (Observe over the cluster, FromCluster). Errors: the cluster's (the
// repository, the store, a setting: see deploy.OpenCluster) or a state store that fails.
func (o *Observer) Observe(ctx context.Context) (*Fleet, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cluster != nil {
		desired, _, err := Desired(ctx, o.cluster.Store(), o.opts.Repo, o.opts.Branch)
		if err != nil {
			return nil, err
		}
		if desired != o.openedFor { // a deploy since: its topology may have other nodes
			o.opts.logger().Info("the desired commit changed: the cluster is opened again", "commit", desired)
			o.cluster.Close()
			o.cluster = nil
		}
	}
	if o.cluster == nil {
		c, err := o.open(ctx)
		if err != nil {
			return nil, err
		}
		desired, _, err := Desired(ctx, c.Store(), o.opts.Repo, o.opts.Branch)
		if err != nil {
			c.Close()
			return nil, err
		}
		o.cluster, o.openedFor = c, desired
	}
	return Observe(ctx, FromCluster(o.cluster), o.opts)
}

// Close closes the cluster it opened.
func (o *Observer) Close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cluster != nil {
		o.cluster.Close()
		o.cluster = nil
	}
}
