package rollout_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/nixrunner/nixtest"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// shared is the package's lab: pve and three nodes. Every test leaves it as it found it: every node
// on its baseline system, healthy and clustered.
var shared = &lab.Shared{Options: lab.Options{Nodes: 3}}

func TestMain(m *testing.M) {
	if spec := os.Getenv(controllerEnv); spec != "" {
		os.Exit(runController(spec))
	}
	// Once per Nix version. With the second, the deploys, rollbacks and provisioning that run nix on both
	// sides (profiles, generations, templates); the tests of the controller's and the lab's own
	// behaviour (activation modes, timers, dropped connections, gates, accounts, secrets, fetches
	// between nodes, the System contract, whose only nix of the controller is the closure copy that
	// remote's contract runs with both) only with the first.
	os.Exit(nixtest.Main(func() int { return shared.Main(m) },
		"-test.skip=^(TestLab(Mode|DeadMan|SSHDropped|ControllerKilled|ActivationThatBrokeSSHD|Accounts|SecretsRotated|SwitchInhibitors|ActivationExit2|BrokenCommit|WavesClusterFails|FanOut)|TestSystemContract$)"))
}

// labConfig is how the rollout reaches the lab: its key and known_hosts, short SSH timeouts.
func labConfig(l *lab.Lab) remote.Config {
	return remote.Config{
		User: "root", Port: 22, KeyFile: l.ClientKey(), KnownHosts: l.KnownHosts(),
		ConnectTimeout: 3 * time.Second, Keepalive: 500 * time.Millisecond, KeepaliveMax: 3, MaxSessions: 8,
		ProxmoxHost: l.PVE().Address().String(), ProxmoxStorage: "local", TemplateDir: "/var/lib/vz/template/cache",
		BootTimeout: 30 * time.Second, ClosureCopy: remote.CopyExport,
	}
}

// labRolloutConfig are the lab tests' timeouts: seconds, not minutes; the gate authenticates as l's
// system user (the lab's events define accounts).
func labRolloutConfig(l *lab.Lab) rollout.Config {
	return rollout.Config{
		SystemNkeyFile:    l.NkeyFile(lab.SystemUser),
		ConfirmTimeout:    45 * time.Second,
		GateTimeout:       20 * time.Second,
		GatePoll:          100 * time.Millisecond,
		SettleTimeout:     20 * time.Second,
		PreflightTimeout:  10 * time.Second,
		ActivationTimeout: 20 * time.Second,
		ReconnectTimeout:  10 * time.Second,
		CopyTimeout:       time.Minute,
		HTTPTimeout:       2 * time.Second,
	}
}

// labWorld is the shared lab as the rollout sees it: SSH systems, the real NATS cluster, pct over
// SSH, and a state store of the test's own.
type labWorld struct {
	l        *lab.Lab
	top      *topology.Topology
	cfg      remote.Config
	pool     *remote.Pool
	systems  map[string]*rollout.SSHSystem
	store    *store.Store
	r        *rollout.Rollout
	baseline map[string]string // the systems lab up activated
	log      *syncBuffer
}

var (
	baselineOnce sync.Once
	baselineTops map[string]string
	baselineErr  error
)

func newLabWorld(t *testing.T) *labWorld {
	t.Helper()
	l := shared.Get(t)
	baselineOnce.Do(func() { baselineTops, baselineErr = l.Build(context.Background(), l.Topology()) })
	if baselineErr != nil {
		t.Fatal(baselineErr)
	}
	w := &labWorld{l: l, top: l.Topology(), cfg: labConfig(l), systems: map[string]*rollout.SSHSystem{}, baseline: baselineTops, log: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(w.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("rollout log:\n%s", w.log)
		}
	})
	pool, err := remote.NewPool(w.cfg, remote.Options{Logger: logger, Output: w.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	w.pool = pool
	systems := map[string]rollout.System{}
	for _, n := range l.Nodes() {
		h := w.cfg.NodeHost(n.Name(), n.Address())
		node, err := pool.Node(h, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := rollout.NewSSHSystem(node, w.cfg, h, 10*time.Second, logger)
		w.systems[n.Name()], systems[n.Name()] = s, s
	}
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w.store = st
	cluster, err := rollout.NewNATS(w.top, labRolloutConfig(w.l))
	if err != nil {
		t.Fatal(err)
	}
	pve, err := pool.Client(w.cfg.ProxmoxSSH("pve"))
	if err != nil {
		t.Fatal(err)
	}
	w.r = &rollout.Rollout{Topology: w.top, Systems: systems, Cluster: cluster, States: st, Proxmox: remote.NewPCT(pve),
		Config: labRolloutConfig(w.l), Logger: logger}
	t.Cleanup(func() { w.restore(t) })
	return w
}

// build builds every node's system of the lab topology changed by change.
func (w *labWorld) build(t *testing.T, change func(*topology.Topology)) map[string]string {
	t.Helper()
	topo := w.l.Topology()
	change(topo)
	tops, err := w.l.Build(t.Context(), topo)
	if err != nil {
		t.Fatal(err)
	}
	return tops
}

func (w *labWorld) targets(tops map[string]string, commit string, nodes ...string) []rollout.Target {
	if len(nodes) == 0 {
		nodes = w.top.NodeNames()
	}
	var ts []rollout.Target
	for _, n := range nodes {
		ts = append(ts, rollout.Target{Node: n, Toplevel: tops[n], Commit: commit})
	}
	return ts
}

func (w *labWorld) rollout(ctx context.Context, t *testing.T, req rollout.Request) (*rollout.Plan, *rollout.Result) {
	t.Helper()
	plan, err := w.r.Plan(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	res := w.r.Run(ctx, plan, nil)
	for _, nr := range res.Nodes {
		t.Logf("%s %s %s: copy %s, activation %s, rejoin %s, total %s %s", nr.Node, nr.Action, nr.Status,
			nr.Copy.Round(time.Millisecond), nr.Activation.Round(time.Millisecond), nr.Rejoin.Round(time.Millisecond),
			nr.Duration.Round(time.Millisecond), nr.Error)
	}
	t.Logf("rollout %s: %s in %s %s", req.Commit, res.Status, res.Duration.Round(time.Millisecond), res.Error)
	return plan, res
}

// restore puts every node back on its baseline system and waits for a healthy cluster.
func (w *labWorld) restore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range w.l.Nodes() {
		if err := n.ClearFaults(); err != nil {
			t.Error(err)
		}
		if !n.SSHDRunning() {
			if err := n.Boot(ctx); err != nil {
				t.Errorf("boot %s: %v", n.Name(), err)
			}
		}
		if n.CurrentSystem() != w.baseline[n.Name()] {
			if err := n.Activate(ctx, w.baseline[n.Name()]); err != nil {
				t.Errorf("restore %s: %v", n.Name(), err)
			}
		}
	}
	if err := w.l.WaitReady(ctx, time.Minute); err != nil {
		t.Errorf("restore: %v", err)
	}
}

// labSysWorld is the System contract's world on lab node nats-2.
func labSysWorld(t *testing.T) *sysWorld {
	w := newLabWorld(t)
	n := w.l.Node("nats-2")
	// A timer at systemd's default AccuracySec=1min would elapse at this spot, long after the
	// contract's short timers are due: only the accuracy cimdeploy sets makes them fire in time.
	if err := n.PlaceTimerSpot(time.Now().Add(40 * time.Second)); err != nil {
		t.Fatal(err)
	}
	other := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = 72 << 20 })
	return &sysWorld{
		sys:   w.systems["nats-2"],
		base:  w.baseline["nats-2"],
		other: other["nats-2"],
		failNext: func(t *testing.T, code int) {
			if err := n.FailNextActivation(code); err != nil {
				t.Fatal(err)
			}
		},
		dropDuring: func(t *testing.T, activate func()) {
			if err := n.SlowNextActivation(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				activate()
			}()
			waitFor(t, 20*time.Second, "activation unit running", func() bool {
				pids, _ := filepath.Glob(filepath.Join(n.Dir(), "state", "units", "cimdeploy-test-*", "pid"))
				return len(pids) > 0
			})
			t.Logf("dropped %d ssh connections of nats-2", n.DropSSHConnections())
			<-done
		},
		running: n.CurrentSystem,
		short:   2 * time.Second,
		settle:  8 * time.Second,
	}
}

// controllerEnv makes the test binary a controller that runs one node's switch (runController).
const controllerEnv = "CIMDEPLOY_ROLLOUT_TEST_CONTROLLER"

// controllerSpec is what runController switches.
type controllerSpec struct {
	LabDir   string        `json:"lab_dir"`
	Node     string        `json:"node"`
	Target   string        `json:"target"`
	Confirm  time.Duration `json:"confirm"`
	StoreDir string        `json:"store_dir"`
}

// runController is a cimdeploy controller in a process of its own, for the test that kills it: it
// switches one node of the lab with a gate that never passes, so it is killed while it waits.
func runController(spec string) int {
	var s controllerSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l, err := lab.Open(s.LabDir, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := labConfig(l)
	pool, err := remote.NewPool(cfg, remote.Options{Logger: logger, Output: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer pool.Close()
	top := l.Topology()
	systems := map[string]rollout.System{}
	for _, n := range l.Nodes() {
		h := cfg.NodeHost(n.Name(), n.Address())
		node, err := pool.Node(h, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		systems[n.Name()] = rollout.NewSSHSystem(node, cfg, h, 10*time.Second, logger)
	}
	nats, err := rollout.NewNATS(top, labRolloutConfig(l))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rcfg := labRolloutConfig(l)
	rcfg.ConfirmTimeout, rcfg.GateTimeout = s.Confirm, 10*time.Minute
	hold := &atomic.Bool{}
	r := &rollout.Rollout{Topology: top, Systems: systems, Cluster: neverHealthy{nats, hold}, Config: rcfg, Logger: logger}
	ctx := context.Background()
	obs, leader, err := r.Observe(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	hold.Store(true)
	plan := rollout.NewPlan(rollout.PlanInput{RunID: "killed", Commit: "k", Observed: obs, Leader: leader, Force: true,
		Targets: []rollout.Target{{Node: s.Node, Toplevel: s.Target, Commit: "k"}}})
	res := r.Run(ctx, plan, nil)
	fmt.Fprintf(os.Stderr, "controller finished, which it should not: %s %s\n", res.Status, res.Error)
	return 1
}

// neverHealthy is the real cluster until hold is set, and then a gate that never passes.
type neverHealthy struct {
	*rollout.NATS
	hold *atomic.Bool
}

func (n neverHealthy) Health(ctx context.Context, node string, peers int) error {
	if n.hold.Load() {
		return errors.New("held by the test: this controller is to be killed in its gate")
	}
	return n.NATS.Health(ctx, node, peers)
}
