package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// RecentGenerations is how many generations, the newest, a Node lists.
const RecentGenerations = 5

// DefaultTimeout bounds one node's observation when neither Options nor the rollout's configuration
// give a bound.
const DefaultTimeout = 30 * time.Second

// Records is the state store as an observation reads it: the node records, their history and the
// run history. *store.Store is one.
type Records interface {
	rollout.States
	rollout.History
	Runs(ctx context.Context, limit int) ([]store.RunSummary, error)
}

var _ Records = (*store.Store)(nil)

// Source is what an observation reads: the parts of a rollout over the cluster (a deploy.Cluster has
// them all, see FromCluster) and the state store.
type Source struct {
	Topology *topology.Topology
	// Commit is the commit the topology was read at: the desired commit when no deploy succeeded yet.
	Commit  string
	Systems map[string]rollout.System
	Cluster rollout.Cluster
	Records Records
	// Timeout bounds one node's observation (its SSH reads and NATS checks); 0: DefaultTimeout.
	Timeout time.Duration
}

// FromCluster is the Source of an open cluster; one node's observation is bounded by the rollout's
// pre-flight timeout (CIMDEPLOY_ROLLOUT_PREFLIGHT_TIMEOUT), each NATS request by its HTTP timeout.
func FromCluster(c *deploy.Cluster) Source {
	return Source{Topology: c.Topology, Commit: c.Commit, Systems: c.Rollout.Systems, Cluster: c.Rollout.Cluster,
		Records: c.Store(), Timeout: c.Rollout.Config.PreflightTimeout}
}

// Options say which runs make the desired commit.
type Options struct {
	// Repo is the repository as runs record it (deploy.Deployer.Source().String()); "": any.
	Repo string
	// Branch is the deploy branch (main, or refs/heads/main): the desired commit is the commit of its
	// last successful deploy run. "": main.
	Branch string
	Logger *slog.Logger
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// Fleet is one observation of every node of the topology.
type Fleet struct {
	// Commit is the commit the topology was read at.
	Commit string `json:"commit"`
	// Desired is the commit every node should run: that of DesiredRun, the last successful deploy of
	// the deploy branch, or Commit when there is none ("topology").
	Desired    string `json:"desired"`
	DesiredRun string `json:"desired_run,omitempty"`
	// Leader is the JetStream meta leader as the first healthy node names it ("" when none is).
	Leader   string        `json:"leader,omitempty"`
	Observed time.Time     `json:"observed"`
	Duration time.Duration `json:"duration_ns"`
	// Nodes are in the topology's order.
	Nodes []Node `json:"nodes"`
}

// OK reports whether every node is reachable, healthy, not drifted and at the desired commit.
func (f *Fleet) OK() bool {
	for _, n := range f.Nodes {
		if !n.OK() {
			return false
		}
	}
	return true
}

// Problems are every node's problems, each prefixed with the node's name.
func (f *Fleet) Problems() []string {
	var out []string
	for _, n := range f.Nodes {
		for _, p := range n.Problems {
			out = append(out, n.Node+": "+p)
		}
	}
	return out
}

// Node is what an observation found on one node.
type Node struct {
	Node string `json:"node"`
	// Reachable: its running system and generations were read over SSH.
	Reachable bool `json:"reachable"`
	// Toplevel is the running system (/run/current-system), Generation the newest generation of the
	// profile holding it (0 when none does: the node runs a system outside its profile).
	Toplevel   string `json:"toplevel,omitempty"`
	Generation int    `json:"generation,omitempty"`
	// Commit is the commit the running system came from: cimdeploy's record when it deployed that
	// system, else the system's configuration revision, else an earlier record of that system ("" when
	// unknown).
	Commit  string `json:"commit,omitempty"`
	Desired string `json:"desired"`
	// AtDesired: Commit is the desired commit.
	AtDesired bool `json:"at_desired"`
	// Healthy: the rollout's health check passed (/healthz, clustered with every other node of the
	// topology, a meta leader known, and with system account credentials every server answering).
	Healthy bool `json:"healthy"`
	Leader  bool `json:"leader,omitempty"`
	// Drifted: the node runs another system than cimdeploy last recorded for it (switched by hand).
	Drifted bool `json:"drifted"`
	// Problems say, one sentence each, why the node is not OK: unreachable, unhealthy, drifted, not
	// at the desired commit.
	Problems []string `json:"problems,omitempty"`
	// Record is what cimdeploy recorded for the node (zero when nothing).
	Record rollout.NodeState `json:"record"`
	// Generations are the newest RecentGenerations generations, oldest first, with their commits.
	Generations []deploy.NodeGeneration `json:"generations,omitempty"`
	Duration    time.Duration           `json:"duration_ns"`
}

// OK reports whether the node is reachable, healthy, not drifted and at the desired commit.
func (n Node) OK() bool { return n.Reachable && n.Healthy && !n.Drifted && n.AtDesired }

// Observe observes every node of src's topology at once, each within src.Timeout. A node that cannot
// be reached or is unhealthy is an observation; the error is for a state store that fails (or ctx).
func Observe(ctx context.Context, src Source, opts Options) (*Fleet, error) {
	start := opts.now()
	desired, run, err := Desired(ctx, src.Records, opts.Repo, opts.Branch)
	if err != nil {
		return nil, err
	}
	f := &Fleet{Commit: src.Commit, Desired: cmp.Or(desired, src.Commit), DesiredRun: run, Observed: start.UTC()}
	names := src.Topology.NodeNames()
	f.Nodes = make([]Node, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() { f.Nodes[i], errs[i] = observeNode(ctx, src, name, len(names)-1, f.Desired, opts) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, n := range f.Nodes {
		if n.Healthy {
			lctx, cancel := context.WithTimeout(ctx, timeout(src))
			f.Leader, _ = src.Cluster.Leader(lctx, n.Node) // a healthy server named one a moment ago
			cancel()
			if f.Leader != "" {
				break
			}
		}
	}
	for i := range f.Nodes {
		f.Nodes[i].Leader = f.Nodes[i].Node == f.Leader
	}
	f.Duration = opts.now().Sub(start)
	return f, nil
}

func timeout(src Source) time.Duration {
	if src.Timeout > 0 {
		return src.Timeout
	}
	return DefaultTimeout
}

// observeNode reads node name within the source's timeout: the record and the system over SSH on
// one side, the NATS health check on the other, both at once.
func observeNode(ctx context.Context, src Source, name string, peers int, desired string, opts Options) (Node, error) {
	start := opts.now()
	ctx, cancel := context.WithTimeout(ctx, timeout(src))
	defer cancel()
	n := Node{Node: name, Desired: desired}
	var healthErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		if src.Cluster == nil {
			healthErr = errors.New("no NATS cluster to check")
			return
		}
		healthErr = src.Cluster.Health(ctx, name, peers)
	})
	defer wg.Wait()

	rec, _, err := rollout.ReadState(ctx, src.Records, name)
	if err != nil {
		return n, fmt.Errorf("the record of node %s: %w", name, err)
	}
	hist, err := rollout.StateHistory(ctx, src.Records, name)
	if err != nil {
		return n, fmt.Errorf("the records of node %s: %w", name, err)
	}
	n.Record = rec
	var gens []rollout.Generation
	sys, ok := src.Systems[name]
	if !ok {
		err = errors.New("no connection configured")
	} else if n.Toplevel, err = sys.Current(ctx); err == nil {
		gens, err = sys.Generations(ctx)
	}
	wg.Wait()
	if err != nil {
		n.Problems = append(n.Problems, "unreachable: "+err.Error())
	} else {
		n.Reachable = true
		n.Generation, n.Commit, n.Generations = commits(n.Toplevel, gens, rec, hist)
	}
	if healthErr != nil {
		n.Problems = append(n.Problems, "unhealthy: "+healthErr.Error())
	} else {
		n.Healthy = true
	}
	if n.Reachable {
		if why := Drift(n.Toplevel, rec); why != "" {
			n.Drifted = true
			n.Problems = append(n.Problems, why)
		}
		n.AtDesired = n.Commit != "" && n.Commit == desired
		if !n.AtDesired {
			n.Problems = append(n.Problems, notAtDesired(n, rec))
		}
	}
	n.Duration = opts.now().Sub(start)
	if len(n.Problems) > 0 {
		opts.logger().Debug("node needs attention", "node", name, "problems", strings.Join(n.Problems, "; "))
	}
	return n, nil
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Drift says why a node that runs current was switched behind cimdeploy's back, "" when it was not:
// cimdeploy recorded a deployment on it, and the node runs another system. It is the rollout
// pre-flight's "switched by hand" (rollout's planNode), which refuses such a node unless forced.
func Drift(current string, rec rollout.NodeState) string {
	if rec.Toplevel == "" || current == rec.Toplevel || (rec.Test != nil && current == rec.Test.Toplevel) { // a test activation is no drift
		return ""
	}
	return fmt.Sprintf("switched by hand: it runs %s, but cimdeploy last deployed %s (generation %d, commit %s, run %s)",
		orNothing(current), rec.Toplevel, rec.Generation, shortCommit(rec.Commit), rec.RunID)
}

func notAtDesired(n Node, rec rollout.NodeState) string {
	why := fmt.Sprintf("at commit %s, want %s", shortCommit(n.Commit), shortCommit(n.Desired))
	if rec.FailedCommit != "" && rec.FailedCommit == n.Desired {
		why += fmt.Sprintf("; it failed here at %s (run %s) and was rolled back: %s",
			rec.FailedAt.Format(time.RFC3339), rec.FailedRunID, firstLine(rec.FailedReason))
	}
	return why
}

// commitID is a commit's id, full or abbreviated (a revision like "dirty" is none).
var commitID = regexp.MustCompile(`^[0-9a-f]{7,64}$`)

// commits finds the running generation (the newest holding current) and the commits of the running
// system and of the recent generations: the record when it is of that system, else the system's
// configuration revision, else the newest earlier record of that system (as deploy.Cluster's
// Generations does).
func commits(current string, gens []rollout.Generation, rec rollout.NodeState, hist []rollout.NodeState) (int, string, []deploy.NodeGeneration) {
	deployed := map[string]string{}
	for _, h := range hist { // oldest first: the newest record of a system wins
		if h.Commit != "" && h.Toplevel != "" {
			deployed[h.Toplevel] = h.Commit
		}
	}
	if rec.Commit != "" && rec.Toplevel != "" {
		deployed[rec.Toplevel] = rec.Commit
	}
	commitOf := func(toplevel, revision string) string {
		if c, ok := deployed[toplevel]; ok && toplevel == rec.Toplevel {
			return c
		}
		if commitID.MatchString(revision) {
			return revision
		}
		return deployed[toplevel]
	}
	running, commit := 0, ""
	out := make([]deploy.NodeGeneration, 0, len(gens))
	for _, g := range gens {
		ng := deploy.NodeGeneration{Generation: g, Commit: commitOf(g.Toplevel, g.Revision), Running: g.Toplevel == current}
		if ng.Running && g.Number > running {
			running = g.Number
		}
		out = append(out, ng)
	}
	// The running system's commit, also when it is no generation of the profile.
	commit = commitOf(current, "")
	if g, ok := rollout.FindGeneration(gens, running); ok {
		commit = commitOf(current, g.Revision)
	}
	if len(out) > RecentGenerations {
		out = out[len(out)-RecentGenerations:]
	}
	return running, commit, out
}

// Desired is the commit of the last successful deploy run of branch in runs (of repo; "": any repo)
// and that run's id, or "" when there is none. branch matches a run's ref as main or refs/heads/main.
func Desired(ctx context.Context, runs Records, repo, branch string) (commit, runID string, err error) {
	branch = strings.TrimPrefix(cmp.Or(branch, "main"), "refs/heads/")
	all, err := runs.Runs(ctx, 0)
	if err != nil {
		return "", "", fmt.Errorf("the desired commit: %w", err)
	}
	for _, r := range all { // newest first
		if r.Kind != pipeline.KindDeploy || r.Status != pipeline.StatusSuccess || r.Commit == "" {
			continue
		}
		if repo != "" && r.Repo != repo {
			continue
		}
		if strings.TrimPrefix(r.Ref, "refs/heads/") == branch {
			return r.Commit, r.ID, nil
		}
	}
	return "", "", nil
}

func orNothing(p string) string {
	if p == "" {
		return "nothing"
	}
	return p
}

func shortCommit(c string) string {
	switch {
	case c == "":
		return "unknown"
	case len(c) > 12:
		return c[:12]
	}
	return c
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
