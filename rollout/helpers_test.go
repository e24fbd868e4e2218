package rollout_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/remote/remotetest"
	"github.com/cimdeploy/cimdeploy/rollout"
	"github.com/cimdeploy/cimdeploy/rollout/rollouttest"
)

// fastConfig is a rollout configuration for the fakes: every wait short, every bound finite.
func fastConfig() rollout.Config {
	return rollout.Config{
		ConfirmTimeout:    5 * time.Second,
		GateTimeout:       300 * time.Millisecond,
		GatePoll:          10 * time.Millisecond,
		SettleTimeout:     300 * time.Millisecond,
		PreflightTimeout:  50 * time.Millisecond,
		ActivationTimeout: 2 * time.Second,
		ReconnectTimeout:  time.Second,
		CopyTimeout:       2 * time.Second,
		HTTPTimeout:       time.Second,
		MaxParallel:       4,
	}
}

// testTopology is a cluster of n nodes nats-1..n on 10.0.0.11.. with NATS and Proxmox settings.
func testTopology(n int) *topology.Topology {
	t := &topology.Topology{
		Sequence: 1,
		Domain:   topology.Domain{Name: "test"},
		Network: topology.Network{CIDR: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1"),
			DNS: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		Nodes: map[string]topology.Node{},
		Services: topology.Services{NATS: &topology.NATS{ClientPort: 4222, MonitorPort: 8222,
			Cluster: topology.Cluster{Name: "test", Port: 6222}}},
	}
	for i := 1; i <= n; i++ {
		t.Nodes[fmt.Sprintf("nats-%d", i)] = topology.Node{Interface: "eth0", Address: netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + i)}),
			PrefixLength: 24, System: "x86_64-linux", StateVersion: "25.05",
			Proxmox: topology.Proxmox{Host: "pve", VMID: 200 + i, Cores: 1, MemoryMiB: 512, Storage: "local-lvm", Bridge: "vmbr0",
				Unprivileged: true, Features: []string{"nesting=1"}}}
	}
	return t
}

// fakeWorld is a cluster of fake nodes, a fake Proxmox host and a real (embedded) state store.
type fakeWorld struct {
	top     *topology.Topology
	systems map[string]*rollouttest.System
	cluster *rollouttest.Cluster
	proxmox *remotetest.Proxmox
	store   *store.Store
	r       *rollout.Rollout
	log     *syncBuffer
}

// base is the system every fake node runs at the start: its own "commit a".
func base(node string) string { return rollouttest.Toplevel(node + "-a") }

// built is node's system of commit.
func built(node, commit string) string { return rollouttest.Toplevel(node + "-" + commit) }

func newFakeWorld(t *testing.T, n int) *fakeWorld {
	t.Helper()
	w := &fakeWorld{top: testTopology(n), systems: map[string]*rollouttest.System{}, proxmox: remotetest.NewProxmox("pve"), log: &syncBuffer{}}
	var all []*rollouttest.System
	systems := map[string]rollout.System{}
	for _, name := range w.top.NodeNames() {
		s := rollouttest.NewSystem(name, base(name))
		t.Cleanup(s.Close)
		w.systems[name] = s
		systems[name] = s
		all = append(all, s)
	}
	w.cluster = rollouttest.NewCluster(all...)
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w.store = st
	w.r = &rollout.Rollout{Topology: w.top, Systems: systems, Cluster: w.cluster, States: st, Proxmox: w.proxmox,
		Config: fastConfig(), Logger: slog.New(slog.NewTextHandler(w.log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	return w
}

// targets are every node's system of commit.
func (w *fakeWorld) targets(commit string, nodes ...string) []rollout.Target {
	if len(nodes) == 0 {
		nodes = w.top.NodeNames()
	}
	var ts []rollout.Target
	for _, n := range nodes {
		ts = append(ts, rollout.Target{Node: n, Toplevel: built(n, commit), Commit: commit})
	}
	return ts
}

// rollout plans and runs req, failing the test when planning fails.
func (w *fakeWorld) rollout(ctx context.Context, t *testing.T, req rollout.Request) (*rollout.Plan, *rollout.Result, *recorder) {
	t.Helper()
	plan, err := w.r.Plan(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	res := w.r.Run(ctx, plan, rec)
	t.Logf("plan %s: %+v\nresult %s %s", req.Commit, plan.Nodes, res.Status, res.Error)
	return plan, res, rec
}

func (w *fakeWorld) healthy(t *testing.T) {
	t.Helper()
	for _, name := range w.top.NodeNames() {
		if err := w.cluster.Health(t.Context(), name, len(w.systems)-1); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// recorder is a Tracker that records what it is told.
type recorder struct {
	mu      sync.Mutex
	order   []string
	skipped map[string]rollout.Status
	notes   map[string]string
	errs    map[string]error
	out     bytes.Buffer
}

func (r *recorder) Step(ctx context.Context, node string, fn func(ctx context.Context, st rollout.Step) error) error {
	r.mu.Lock()
	r.order = append(r.order, node)
	r.mu.Unlock()
	st := &recStep{r: r, node: node}
	err := fn(ctx, st)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.errs == nil {
		r.errs, r.notes = map[string]error{}, map[string]string{}
	}
	r.errs[node], r.notes[node] = err, st.note
	return err
}

func (r *recorder) Skip(nodes []string, status rollout.Status, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.skipped == nil {
		r.skipped = map[string]rollout.Status{}
	}
	for _, n := range nodes {
		r.skipped[n] = status
	}
}

type recStep struct {
	r    *recorder
	node string
	note string
}

func (s *recStep) Progress(context.Context, int, int, string) {}
func (s *recStep) Note(format string, args ...any)            { s.note = fmt.Sprintf(format, args...) }
func (s *recStep) Output() io.Writer                          { return lockedWriter{s.r} }

type lockedWriter struct{ r *recorder }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	return w.r.out.Write(p)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// nodeOrder is the order of the results' nodes.
func nodeOrder(res *rollout.Result) []string {
	var names []string
	for _, n := range res.Nodes {
		names = append(names, n.Node)
	}
	return names
}

func generationNumbers(gens []rollout.Generation) []int {
	var ns []int
	for _, g := range gens {
		ns = append(ns, g.Number)
	}
	return ns
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

func mustContain(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s does not say %q:\n%s", what, w, s)
		}
	}
}

// waitFor polls f until it reports true or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		<-tick.C
	}
}

var _ = remote.ContainerMissing
