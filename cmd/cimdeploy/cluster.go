package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// cluster is the deployed cluster as the commands that act on it outside a pipeline run reach it
// (rollback, generations): the topology of the repository at opts.Rev, the state store, and a
// rollout over SSH.
type cluster struct {
	top    *topology.Topology
	commit string
	store  *store.Store
	pool   *remote.Pool
	r      *rollout.Rollout
}

// openCluster checks the settings, folds the topology of the repository's rev (a checkout into the
// data directory, removed again), opens the state store and connects (lazily) to the nodes.
func openCluster(ctx context.Context, g *globalOptions, opts *runOptions) (*cluster, error) {
	if opts.Lab {
		if err := applyLab(ctx, g, opts.LabDir, opts); err != nil {
			return nil, err
		}
	}
	if opts.Repo == "" {
		return nil, usageError(errors.New("--repo is required: the cluster's topology comes from its events"))
	}
	if err := checkout.ValidateRev(opts.Rev); err != nil {
		return nil, usageError(err)
	}
	src, err := repoSource(*opts)
	if err != nil {
		return nil, err
	}
	if err := opts.Store.Validate(); err != nil {
		return nil, usageError(err)
	}
	if err := validateDeploy(ctx, opts); err != nil {
		return nil, err
	}
	cache := &checkout.Cache{Dir: opts.Store.DataDir, Logger: g.logger}
	ws, err := cache.Checkout(ctx, src, opts.Rev, filepath.Join(opts.Store.DataDir, "work"))
	if err != nil {
		return nil, &exitError{code: exitInfra, err: err}
	}
	evs, problems := events.Load(ctx, filepath.Join(ws.Dir, opts.Events))
	top, more := topology.Fold(evs)
	ws.Close()
	if problems = append(problems, more...); len(problems) > 0 {
		return nil, &exitError{code: exitFailed, err: fmt.Errorf("the events of %s at %s: %w", src, short(ws.Commit), problemList{problems})}
	}
	st, err := store.Open(ctx, opts.Store, g.logger)
	if err != nil {
		return nil, &exitError{code: exitInfra, err: err}
	}
	pool, err := remote.NewPool(opts.Remote, remote.Options{Logger: g.logger, Nix: opts.Nix.Nix})
	if err != nil {
		st.Close()
		return nil, usageError(err)
	}
	r, err := rollout.Connect(pool, top, opts.Remote, opts.Rollout, st, g.logger)
	if err != nil {
		pool.Close()
		st.Close()
		return nil, usageError(err)
	}
	return &cluster{top: top, commit: ws.Commit, store: st, pool: pool, r: r}, nil
}

func (c *cluster) Close() {
	c.pool.Close()
	c.store.Close()
}

// nodes checks the nodes named (or, with all, takes every node of the topology).
func (c *cluster) nodes(names []string, all bool) ([]string, error) {
	switch {
	case all && len(names) > 0:
		return nil, usageError(errors.New("--node and --all: pass one"))
	case all:
		return c.top.NodeNames(), nil
	case len(names) == 0:
		return nil, usageError(errors.New("name a node (--node nats-2) or pass --all"))
	}
	for _, n := range names {
		if _, ok := c.top.Nodes[n]; !ok {
			return nil, usageError(fmt.Errorf("node %s is not in the topology (nodes: %s)", n, strings.Join(c.top.NodeNames(), ", ")))
		}
	}
	return names, nil
}

// nodeGeneration is a generation with the commit it came from and whether the node runs it.
type nodeGeneration struct {
	rollout.Generation
	Commit  string `json:"commit,omitempty"`
	Running bool   `json:"running"`
}

var commitID = regexp.MustCompile(`^[0-9a-f]{7,64}$`)

// generations lists node's generations with their commits: the system's own configuration revision
// when it names one, else the deployment the state store recorded for that system.
func (c *cluster) generations(ctx context.Context, node string) ([]nodeGeneration, error) {
	sys := c.r.Systems[node]
	cur, err := sys.Current(ctx)
	if err != nil {
		return nil, &exitError{code: exitInfra, err: err}
	}
	gens, err := sys.Generations(ctx)
	if err != nil {
		return nil, &exitError{code: exitInfra, err: err}
	}
	hist, err := c.store.NodeHistory(ctx, node)
	if err != nil {
		return nil, &exitError{code: exitInfra, err: err}
	}
	deployed := map[string]string{}
	for _, h := range hist { // oldest first: the newest record of a system wins
		if h.Commit != "" && h.Toplevel != "" {
			deployed[h.Toplevel] = h.Commit
		}
	}
	out := make([]nodeGeneration, len(gens))
	for i, g := range gens {
		commit := g.Revision
		if !commitID.MatchString(commit) {
			commit = deployed[g.Toplevel]
		}
		out[i] = nodeGeneration{Generation: g, Commit: commit, Running: g.Toplevel == cur}
	}
	return out, nil
}

// lineTracker prints the rollout's progress as lines: a node's start, its phases and its end.
type lineTracker struct {
	mu sync.Mutex
	w  io.Writer
}

func (t *lineTracker) printf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, time.Now().Format("15:04:05.000")+" "+format+"\n", args...)
}

func (t *lineTracker) Step(ctx context.Context, node string, fn func(ctx context.Context, st rollout.Step) error) error {
	start := time.Now()
	t.printf("%s started", node)
	st := &lineStep{t: t, node: node}
	err := fn(ctx, st)
	d := time.Since(start).Round(time.Millisecond)
	switch {
	case err != nil:
		t.printf("%s failed in %s: %v", node, d, err)
	case st.note != "":
		t.printf("%s done in %s (%s)", node, d, st.note)
	default:
		t.printf("%s done in %s", node, d)
	}
	return err
}

func (t *lineTracker) Skip(nodes []string, status rollout.Status, why string) {
	for _, n := range slices.Clone(nodes) {
		t.printf("%s %s: %s", n, status, why)
	}
}

type lineStep struct {
	t    *lineTracker
	node string
	note string
}

func (s *lineStep) Progress(_ context.Context, done, expected int, activity string) {
	s.t.printf("%s %d/%d %s", s.node, done, expected, activity)
}
func (s *lineStep) Note(format string, args ...any) { s.note = fmt.Sprintf(format, args...) }

// Output shows the node's command output (an activation's journal), each line after the node's name.
func (s *lineStep) Output() io.Writer { return &prefixWriter{t: s.t, prefix: s.node + " | "} }

type prefixWriter struct {
	t      *lineTracker
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		fmt.Fprintf(p.t.w, "%s%s\n", p.prefix, line)
	}
	return len(b), nil
}
