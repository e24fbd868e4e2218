package rollout_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// TestLabRollingDeployThenRollbackToGeneration rolls a changed NATS setting over the three nodes
// (followers first, the meta leader last), then rolls every node back to the generation it ran.
func TestLabRollingDeployThenRollbackToGeneration(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	const newMax = 80 << 20
	tops := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = newMax })
	plan, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-deploy", Commit: "c2", Targets: w.targets(tops, "c2")})
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s", res.Status, res.Error)
	}
	if plan.Leader == "" || plan.Nodes[2].Node != plan.Leader || !plan.Nodes[2].Leader {
		t.Errorf("the meta leader %q is not last: %+v", plan.Leader, plan.Nodes)
	}
	var sum time.Duration
	for _, n := range w.l.Nodes() {
		nr := res.Node(n.Name())
		if n.CurrentSystem() != tops[n.Name()] || nr.Status != rollout.StatusSuccess || nr.Generation <= nr.FromGeneration {
			t.Errorf("%s runs %s: %+v", n.Name(), n.CurrentSystem(), nr)
		}
		if v, err := n.Varz(ctx); err != nil || v.JetStream.Config.MaxMemory != newMax {
			t.Errorf("%s max_memory %d (%v), want %d", n.Name(), v.JetStream.Config.MaxMemory, err, newMax)
		}
		st, _, err := rollout.ReadState(ctx, w.store, n.Name())
		if err != nil || st.Commit != "c2" || st.Toplevel != tops[n.Name()] || st.Generation != nr.Generation {
			t.Errorf("%s state %+v %v", n.Name(), st, err)
		}
		sum += nr.Activation + nr.Rejoin
	}
	t.Logf("BENCH rolling deploy of 3 nodes: %s in all, activation+rejoin %s (%s per node)", res.Duration.Round(time.Millisecond),
		sum.Round(time.Millisecond), (sum / 3).Round(time.Millisecond))
	if err := w.l.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// cimdeploy rollback --all: each node back to the generation it ran before.
	var back []rollout.Target
	for _, nr := range res.Nodes {
		back = append(back, rollout.Target{Node: nr.Node, Toplevel: nr.From, Generation: nr.FromGeneration, Commit: "c1"})
	}
	_, rb := w.rollout(ctx, t, rollout.Request{RunID: "lab-rollback", Commit: "c1", Targets: back})
	if rb.Status != rollout.StatusSuccess {
		t.Fatalf("rollback %s: %s", rb.Status, rb.Error)
	}
	for _, n := range w.l.Nodes() {
		gens, err := w.systems[n.Name()].Generations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cur := rollout.CurrentGeneration(gens)
		if n.CurrentSystem() != w.baseline[n.Name()] || cur.Number != res.Node(n.Name()).FromGeneration {
			t.Errorf("%s runs %s at generation %d after the rollback", n.Name(), n.CurrentSystem(), cur.Number)
		}
		if _, ok := rollout.FindGeneration(gens, res.Node(n.Name()).Generation); !ok {
			t.Errorf("%s: a rollback to a generation deleted the newer one: %+v", n.Name(), gens)
		}
	}
}

// TestLabBrokenCommitFailsTheGateAndRollsBack rolls out a commit whose NATS settings keep a server out
// of the cluster (another cluster name: it starts, but no route accepts it): the first node fails its
// gate, rolls back, the rollout halts and the cluster stays healthy.
func TestLabBrokenCommitFailsTheGateAndRollsBack(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	w.r.Config.GateTimeout = 4 * time.Second
	tops := w.build(t, func(topo *topology.Topology) {
		for name, n := range topo.Nodes { // the cluster a member names is its node's (roles.go)
			n.Cluster = "lab-cluster-broken"
			topo.Nodes[name] = n
		}
	})
	plan, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-broken", Commit: "bad", Targets: w.targets(tops, "bad")})
	first := plan.Nodes[0].Node
	nr := res.Node(first)
	if res.Status != rollout.StatusFailed || nr.Status != rollout.StatusFailed || !nr.RolledBack || nr.ExitCode != 0 {
		t.Fatalf("rollout %s, %s: %+v", res.Status, first, nr)
	}
	mustContain(t, "error", nr.Error, "health gate", "rolled back to generation")
	for _, np := range plan.Nodes[1:] {
		if res.Node(np.Node).Status != rollout.StatusSkipped || w.l.Node(np.Node).CurrentSystem() != w.baseline[np.Node] {
			t.Errorf("%s was touched after %s failed", np.Node, first)
		}
	}
	if got := w.l.Node(first).CurrentSystem(); got != w.baseline[first] {
		t.Errorf("%s runs %s after its rollback", first, got)
	}
	gens, _ := w.systems[first].Generations(ctx)
	if _, ok := rollout.FindGeneration(gens, nr.Generation); ok {
		t.Errorf("the failed generation %d is still there: %+v", nr.Generation, gens)
	}
	if err := w.l.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatalf("the cluster is not healthy after the rollback: %v", err)
	}
	st, _, _ := rollout.ReadState(ctx, w.store, first)
	if st.FailedCommit != "bad" || st.Toplevel != w.baseline[first] {
		t.Errorf("state %+v", st)
	}
	t.Logf("BENCH failed switch with rollback: %s (gate timeout %s)", nr.Duration.Round(time.Millisecond), w.r.Config.GateTimeout)
}

// TestLabActivationThatBrokeSSHDFailsTheGate: the first node's activation leaves it without an sshd
// that accepts new connections (its listener is stopped once /run/current-system points at the new
// system; the connection the controller holds goes on, as OpenSSH's established sessions outlive
// their listener). Its NATS server is healthy, but the gate's new SSH connection is refused: the gate
// fails, the controller rolls the node back over the connection it holds, and no other node is
// touched. sshd comes back with the rollback (started once the node runs its old system again), so
// the rollback's own gate passes.
func TestLabActivationThatBrokeSSHDFailsTheGate(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	w.r.Config.GateTimeout = 3 * time.Second
	tops := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = 70 << 20 })
	broken := make(chan string, 1)
	watchErr := make(chan error, 1)
	go func() {
		// A watcher beside the rollout, looking every 2 ms: the activation "breaks" sshd, so
		// whichever node switches first loses its listener, and gets it back with its old system.
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		until := func(cond func() bool) error {
			for !cond() {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-tick.C:
				}
			}
			return nil
		}
		var n *lab.Node
		if err := until(func() bool {
			for _, c := range w.l.Nodes() {
				if c.CurrentSystem() == tops[c.Name()] {
					n = c
				}
			}
			return n != nil
		}); err != nil {
			watchErr <- err
			return
		}
		if err := n.StopSSHD(ctx); err != nil {
			watchErr <- err
			return
		}
		broken <- n.Name()
		if err := until(func() bool { return n.CurrentSystem() == w.baseline[n.Name()] }); err != nil {
			watchErr <- err
			return
		}
		watchErr <- n.StartSSHD(ctx)
	}()
	plan, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-sshd-broken", Commit: "no-sshd", Targets: w.targets(tops, "no-sshd")})
	if err := <-watchErr; err != nil {
		t.Fatal(err)
	}
	first := <-broken
	if plan.Nodes[0].Node != first {
		t.Fatalf("sshd was stopped on %s, but %s switched first", first, plan.Nodes[0].Node)
	}
	nr := res.Node(first)
	if res.Status != rollout.StatusFailed || nr.Status != rollout.StatusFailed || !nr.RolledBack || nr.ExitCode != 0 {
		t.Fatalf("rollout %s, %s: %+v", res.Status, first, nr)
	}
	mustContain(t, "error", nr.Error, "health gate", "new ssh connection", "rolled back to generation")
	for _, np := range plan.Nodes[1:] {
		if res.Node(np.Node).Status != rollout.StatusSkipped || w.l.Node(np.Node).CurrentSystem() != w.baseline[np.Node] {
			t.Errorf("%s was touched after %s failed", np.Node, first)
		}
	}
	if got := w.l.Node(first).CurrentSystem(); got != w.baseline[first] {
		t.Errorf("%s runs %s after its rollback", first, got)
	}
}

// TestLabSSHDroppedDuringActivation cuts the node's SSH connections while it activates: the switch
// completes in its unit, the controller reconnects, finds the result and the gate passes.
func TestLabSSHDroppedDuringActivation(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	n := w.l.Node("nats-3")
	tops := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = 88 << 20 })
	if err := n.SlowNextActivation(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	go func() {
		waitFor(t, 30*time.Second, "activation running", func() bool {
			pids, _ := filepath.Glob(filepath.Join(n.Dir(), "state", "units", "cimdeploy-switch-nats-3-*", "pid"))
			return len(pids) > 0
		})
		t.Logf("dropped %d ssh connections of nats-3", n.DropSSHConnections())
	}()
	_, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-drop", Commit: "c3", Targets: w.targets(tops, "c3", "nats-3")})
	nr := res.Node("nats-3")
	if res.Status != rollout.StatusSuccess || !nr.Reconnected || n.CurrentSystem() != tops["nats-3"] {
		t.Fatalf("rollout %s %s: %+v", res.Status, res.Error, nr)
	}
}

// TestLabControllerKilledNodeRevertsByItself kills the controller (a process of its own) right after
// the activation, while it waits in the gate: the node's dead-man timer switches it back after the
// confirm timeout, without any controller.
func TestLabControllerKilledNodeRevertsByItself(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	n := w.l.Node("nats-1")
	tops := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = 90 << 20 })
	gensBefore, err := w.systems["nats-1"].Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const confirm = 3 * time.Second
	spec, _ := json.Marshal(controllerSpec{LabDir: w.l.Dir(), Node: "nats-1", Target: tops["nats-1"], Confirm: confirm})
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), controllerEnv+"="+string(spec))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitFor(t, 60*time.Second, "nats-1 switched by the controller", func() bool { return n.CurrentSystem() == tops["nats-1"] })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := <-exited; err == nil {
		t.Fatalf("the controller finished before it was killed:\n%s", out)
	}
	t.Logf("controller killed after the activation; its log:\n%s", out)
	waitFor(t, confirm+30*time.Second, "nats-1 back on its system", func() bool { return n.CurrentSystem() == w.baseline["nats-1"] })
	t.Logf("BENCH node reverted by itself %s after the controller was killed (confirm timeout %s)",
		time.Since(killed).Round(time.Millisecond), confirm)
	if err := w.l.WaitReady(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the failed generation deleted", func() bool {
		gens, err := w.systems["nats-1"].Generations(ctx)
		return err == nil && len(gens) == len(gensBefore) && rollout.CurrentGeneration(gens).Toplevel == w.baseline["nats-1"]
	})
}

// TestLabHandSwitchedNodeIsRefused: a node an admin switched by hand since cimdeploy's last deployment
// makes the rollout refuse, naming both systems, and touch nothing.
func TestLabHandSwitchedNodeIsRefused(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	// Record the baseline as deployed (every node is at its target: skipped, recorded).
	if _, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-record", Commit: "c1", Targets: w.targets(w.baseline, "c1")}); res.Status != rollout.StatusSuccess {
		t.Fatal(res.Error)
	}
	hand := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = 70 << 20 })
	if err := w.l.Node("nats-2").Activate(ctx, hand["nats-2"]); err != nil {
		t.Fatal(err)
	}
	next := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = 75 << 20 })
	plan, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-refused", Commit: "c4", Targets: w.targets(next, "c4")})
	if res.Status != rollout.StatusRefused {
		t.Fatalf("rollout %s", res.Status)
	}
	mustContain(t, "refusal", strings.Join(plan.Problems, "\n"), "nats-2: switched by hand", hand["nats-2"], w.baseline["nats-2"])
	for _, n := range w.l.Nodes() {
		if want := map[bool]string{true: hand["nats-2"], false: w.baseline[n.Name()]}[n.Name() == "nats-2"]; n.CurrentSystem() != want {
			t.Errorf("%s was touched: runs %s", n.Name(), n.CurrentSystem())
		}
	}
}

// TestLabNewNodeProvisionedThroughPCT: nats-3 has no container (powered off, unknown to pct); the
// rollout creates it from its uploaded template with pct, it boots the template's system and joins
// the cluster before the others are considered. Like every container made from a template it comes
// up with a new SSH host key, which strict known_hosts would refuse: the rollout gives root its own
// key (pct create --ssh-public-keys), learns the new host key over the Proxmox host (pct exec) and
// pins it before the first SSH to the node.
func TestLabNewNodeProvisionedThroughPCT(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	n := w.l.Node("nats-3")
	vmid := w.top.Nodes["nats-3"].Proxmox.VMID
	ledger := filepath.Join(w.l.PVE().Dir(), "state", "pct", strconv.Itoa(vmid)+".json")
	if _, err := os.Stat(ledger); err == nil {
		t.Fatalf("pct knows %d already", vmid)
	}
	// The template of the lab's own nats-3 (w.build rendered the lab flake).
	w.build(t, func(*topology.Topology) {})
	nix, err := nixrunner.New(ctx, w.l.NixConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	built, err := nix.Build(ctx, w.l.FlakeDir(), []string{`packages.x86_64-linux."nats-3-lxc"`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(built[0].Outputs["out"], "tarball", "*.tar.xz"))
	if len(files) != 1 {
		t.Fatalf("template %v", files)
	}
	up, err := w.r.Proxmox.UploadTemplate(ctx, remote.Template{Node: "nats-3", File: files[0]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(ledger); err != nil && !os.IsNotExist(err) {
			t.Error(err)
		}
	})
	oldKey, err := n.HostKey()
	if err != nil {
		t.Fatal(err)
	}
	knownBefore, err := os.ReadFile(w.l.KnownHosts())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	targets := []rollout.Target{{Node: "nats-3", Toplevel: w.baseline["nats-3"], Commit: "c1", Template: up.Volume}}
	plan, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-provision", Commit: "c1", Targets: targets})
	if len(plan.Nodes) != 1 || plan.Nodes[0].Action != rollout.ActionProvision || len(plan.Members) != 2 {
		t.Fatalf("plan %+v", plan)
	}
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s", res.Status, res.Error)
	}
	if !n.SSHDRunning() || n.CurrentSystem() != w.baseline["nats-3"] {
		t.Errorf("nats-3: sshd %v, runs %s", n.SSHDRunning(), n.CurrentSystem())
	}
	if _, err := os.Stat(ledger); err != nil {
		t.Errorf("pct has no container %d: %v", vmid, err)
	}
	if err := w.l.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	newKey, err := n.HostKey()
	if err != nil {
		t.Fatal(err)
	}
	known, err := os.ReadFile(w.l.KnownHosts())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(knownBefore), newKey) {
		t.Errorf("nats-3's new host key was in known_hosts before it was provisioned")
	}
	if newKey == oldKey || !strings.Contains(string(known), n.Address().String()+" "+newKey+"\n") || strings.Contains(string(known), oldKey) {
		t.Errorf("nats-3's host key %q (was %q): want a new one, pinned in known_hosts in place of the old:\n%s", newKey, oldKey, known)
	}
	if !strings.Contains(w.log.String(), "host key of the new container pinned") {
		t.Error("the rollout log does not say it pinned the new host key")
	}
	t.Logf("BENCH provisioned nats-3 in %s (container %s, rejoin %s)", res.Node("nats-3").Duration.Round(time.Millisecond),
		res.Node("nats-3").Activation.Round(time.Millisecond), res.Node("nats-3").Rejoin.Round(time.Millisecond))
}

// TestLabFanOut: with --fan-out, the node whose switch comes first gets its closure from the
// controller and the others fetch what it holds from it (or from each other), checked against the
// controller's hashes; every node switches, and no node keeps the fan-out key afterwards.
func TestLabFanOut(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	w.r.Config.FanOut = 2
	// A change every node shares, as a nixpkgs bump is: every package the nodes run is rebuilt (the
	// lab's stub nixpkgs gets one more comment line in each wrapper), so each node's new closure holds
	// paths the first node's does too.
	pkgs := filepath.Join(strings.TrimPrefix(w.l.OverrideInputs()["nixpkgs"], "path:"), "pkgs", "default.nix")
	orig, err := os.ReadFile(pkgs)
	if err != nil {
		t.Fatal(err)
	}
	const line = "# lab stand-in for nixpkgs' ${pname}: runs the host's ${target}"
	if !strings.Contains(string(orig), line) {
		t.Fatalf("%s: no line %q to change", pkgs, line)
	}
	write := func(data []byte) {
		if err := os.Chmod(pkgs, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pkgs, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { write(orig) })
	write([]byte(strings.Replace(string(orig), line, line+"\n      # rebuilt by TestLabFanOut", 1)))
	tops := w.build(t, func(*topology.Topology) {})
	_, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-fan-out", Commit: "c-fan", Targets: w.targets(tops, "c-fan")})
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s", res.Status, res.Error)
	}
	fetched := 0
	for _, n := range w.l.Nodes() {
		nr := res.Node(n.Name())
		if n.CurrentSystem() != tops[n.Name()] || nr.Status != rollout.StatusSuccess || nr.Copied == 0 {
			t.Errorf("%s runs %s: %+v", n.Name(), n.CurrentSystem(), nr)
		}
		if nr.CopiedFrom != "" {
			fetched++
			if nr.CopiedFrom == n.Name() || res.Node(nr.CopiedFrom).Status != rollout.StatusSuccess {
				t.Errorf("%s fetched from %q", n.Name(), nr.CopiedFrom)
			}
		}
		keys, err := os.ReadFile(filepath.Join(n.Dir(), "home", ".ssh", "authorized_keys"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(keys), "cimdeploy-fanout-") {
			t.Errorf("%s still authorizes the fan-out key", n.Name())
		}
	}
	if fetched != len(w.l.Nodes())-1 {
		t.Errorf("%d nodes fetched their closure from another node, want all but the first: %+v", fetched, res.Nodes)
	}
	if !strings.Contains(w.log.String(), "nodes fetch closures from each other") {
		t.Error("the rollout did not say the nodes fetch from each other")
	}
}
