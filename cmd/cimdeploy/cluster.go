package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// openCluster checks cfg (the lab's settings applied first, with --lab) and opens the deployed
// cluster for rollback and generations.
func openCluster(ctx context.Context, g *globalOptions, cfg *deploy.Config) (*deploy.Cluster, error) {
	if cfg.Lab {
		if err := useLab(ctx, g, cfg); err != nil {
			return nil, err
		}
	}
	if cfg.Repo == "" {
		return nil, usageError(errors.New("--repo is required: the cluster's topology comes from its events"))
	}
	if err := cfg.ValidateCluster(); err != nil {
		return nil, usageError(err)
	}
	c, err := deploy.OpenCluster(ctx, *cfg, g.logger)
	if err != nil {
		return nil, deployError(err)
	}
	return c, nil
}

// clusterNodes checks the nodes named (or, with all, takes every node of the topology).
func clusterNodes(top *topology.Topology, names []string, all bool) ([]string, error) {
	switch {
	case all && len(names) > 0:
		return nil, usageError(errors.New("--node and --all: pass one"))
	case all:
		return top.NodeNames(), nil
	case len(names) == 0:
		return nil, usageError(errors.New("name a node (--node nats-2) or pass --all"))
	}
	for _, n := range names {
		if _, ok := top.Nodes[n]; !ok {
			return nil, usageError(fmt.Errorf("node %s is not in the topology (nodes: %s)", n, strings.Join(top.NodeNames(), ", ")))
		}
	}
	return names, nil
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
