package deploy

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// Cluster is the deployed cluster as it is reached outside a pipeline run (a rollback, the list of a
// node's generations): the topology of the repository at a revision, the state store, and a rollout
// over SSH. Close it.
type Cluster struct {
	// Topology is what the repository's events say at Commit.
	Topology *topology.Topology
	Commit   string
	// Rollout switches the cluster's nodes; its Systems are the nodes by name.
	Rollout *rollout.Rollout

	store     *store.Store
	ownsStore bool
	pool      *remote.Pool
}

// TopologyError is a repository whose events do not fold into a topology: the work's failure, not
// the infrastructure's.
type TopologyError struct {
	Source   checkout.Source
	Commit   string
	Problems events.Problems
}

func (e *TopologyError) Error() string {
	return fmt.Sprintf("the events of %s at %s: %v", e.Source, e.Commit, e.Problems)
}
func (e *TopologyError) Unwrap() error { return e.Problems }

// OpenCluster folds the topology of the repository at cfg.Rev (a checkout into the data directory,
// removed again), opens the state store and connects (lazily) to the nodes. Check cfg with
// ValidateCluster first. Errors: a *ConfigError for a setting, a *TopologyError for events that do
// not fold, anything else from the repository, the store or the network.
func OpenCluster(ctx context.Context, cfg Config, logger *slog.Logger) (*Cluster, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return openCluster(ctx, cfg, nil, &checkout.Cache{Dir: cfg.Store.DataDir, Logger: logger}, logger)
}

// OpenCluster is OpenCluster over the Deployer's configuration and state store.
func (d *Deployer) OpenCluster(ctx context.Context) (*Cluster, error) {
	return openCluster(ctx, d.cfg, d.store, d.cache, d.logger)
}

// openCluster is OpenCluster over st (nil: open cfg.Store, and close it with the Cluster) and cache.
func openCluster(ctx context.Context, cfg Config, st *store.Store, cache *checkout.Cache, logger *slog.Logger) (*Cluster, error) {
	src, err := cfg.Source()
	if err != nil {
		return nil, err
	}
	ws, err := cache.Checkout(ctx, src, cfg.Rev, filepath.Join(cfg.Store.DataDir, "work"))
	if err != nil {
		return nil, err
	}
	top, problems := topology.Load(ctx, filepath.Join(ws.Dir, cfg.Events))
	ws.Close()
	if len(problems) > 0 {
		return nil, &TopologyError{Source: src, Commit: ws.Commit, Problems: problems}
	}
	c := &Cluster{Topology: top, Commit: ws.Commit, store: st}
	if st == nil {
		if c.store, err = store.Open(ctx, cfg.Store, logger); err != nil {
			return nil, err
		}
		c.ownsStore = true
	}
	if c.pool, err = remote.NewPool(cfg.Remote, remote.Options{Logger: logger, Nix: cfg.Nix.Nix}); err != nil {
		c.Close()
		return nil, configError(err)
	}
	if c.Rollout, err = rollout.Connect(c.pool, top, cfg.Remote, cfg.Rollout, c.store, logger); err != nil {
		c.Close()
		return nil, configError(err)
	}
	return c, nil
}

// Close closes the connections to the nodes and the store OpenCluster opened.
func (c *Cluster) Close() {
	if c.pool != nil {
		c.pool.Close()
	}
	if c.ownsStore {
		c.store.Close()
	}
}

// NodeGeneration is a generation with the commit it came from and whether the node runs it.
type NodeGeneration struct {
	rollout.Generation
	Commit  string `json:"commit,omitempty"`
	Running bool   `json:"running"`
}

var commitID = regexp.MustCompile(`^[0-9a-f]{7,64}$`)

// Generations lists node's generations, oldest first, with their commits: the system's own
// configuration revision when it names one, else the deployment the state store recorded for that
// system.
func (c *Cluster) Generations(ctx context.Context, node string) ([]NodeGeneration, error) {
	sys, ok := c.Rollout.Systems[node]
	if !ok {
		return nil, fmt.Errorf("node %s is not in the topology", node)
	}
	cur, err := sys.Current(ctx)
	if err != nil {
		return nil, err
	}
	gens, err := sys.Generations(ctx)
	if err != nil {
		return nil, err
	}
	hist, err := rollout.StateHistory(ctx, c.store, node)
	if err != nil {
		return nil, err
	}
	deployed := map[string]string{}
	for _, h := range hist { // oldest first: the newest record of a system wins
		if h.Commit != "" && h.Toplevel != "" {
			deployed[h.Toplevel] = h.Commit
		}
	}
	out := make([]NodeGeneration, len(gens))
	for i, g := range gens {
		commit := g.Revision
		if !commitID.MatchString(commit) {
			commit = deployed[g.Toplevel]
		}
		out[i] = NodeGeneration{Generation: g, Commit: commit, Running: g.Toplevel == cur}
	}
	return out, nil
}
