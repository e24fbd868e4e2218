package rollout_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// TestLabModeTest: a test activation (switch-to-configuration test) of one node runs the new system
// while the profile and the boot default (state/sbin/init, a container's /sbin/init) stay as they
// were, and the record says so; then a commit whose gate fails is reverted to that test activation.
func TestLabModeTest(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	n := w.l.Node("nats-2")
	const newMax = 68 << 20
	tops := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = newMax })
	before, err := w.systems["nats-2"].Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.r.Config.Mode = rollout.ModeTest
	plan, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-canary", Commit: "c7", Targets: w.targets(tops, "c7", "nats-2")})
	if plan.Nodes[0].Mode != rollout.ModeTest || res.Status != rollout.StatusSuccess {
		t.Fatalf("plan %+v, rollout %s: %s", plan.Nodes[0], res.Status, res.Error)
	}
	if got := n.CurrentSystem(); got != tops["nats-2"] {
		t.Errorf("nats-2 runs %s, want the test activation %s", got, tops["nats-2"])
	}
	ok := *res.Node("nats-2")
	after, err := w.systems["nats-2"].Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || rollout.CurrentGeneration(after) != rollout.CurrentGeneration(before) {
		t.Errorf("profile changed: %+v, was %+v", after, before)
	}
	if init, _ := os.Readlink(filepath.Join(n.Dir(), "state", "sbin", "init")); init != w.baseline["nats-2"]+"/init" {
		t.Errorf("boot default (sbin/init) %s, want the baseline's", init)
	}
	if v, err := n.Varz(ctx); err != nil || v.JetStream.Config.MaxMemory != newMax {
		t.Errorf("nats-2 max_memory %d (%v): not the test activation's", v.JetStream.Config.MaxMemory, err)
	}
	st, _, _ := rollout.ReadState(ctx, w.store, "nats-2")
	if st.Test == nil || st.Test.Toplevel != tops["nats-2"] || st.Test.Commit != "c7" {
		t.Errorf("record %+v (test %+v)", st, st.Test)
	}

	// A commit that never gets healthy, also as a test activation: reverted to what ran.
	w.r.Config.GateTimeout = 4 * time.Second
	broken := w.build(t, func(topo *topology.Topology) {
		for name, n := range topo.Nodes { // the cluster a member names is its node's (roles.go)
			n.Cluster = "lab-cluster-broken"
			topo.Nodes[name] = n
		}
	})
	_, res = w.rollout(ctx, t, rollout.Request{RunID: "lab-canary-bad", Commit: "bad", Targets: w.targets(broken, "bad", "nats-2")})
	nr := res.Node("nats-2")
	if res.Status != rollout.StatusFailed || !nr.RolledBack {
		t.Fatalf("rollout %s: %+v", res.Status, nr)
	}
	mustContain(t, "error", nr.Error, "health gate", "reverted: it runs")
	if got := n.CurrentSystem(); got != tops["nats-2"] {
		t.Errorf("nats-2 runs %s after the revert, want %s", got, tops["nats-2"])
	}
	if gens, _ := w.systems["nats-2"].Generations(ctx); len(gens) != len(before) {
		t.Errorf("generations %+v: the test activations made some", gens)
	}
	if err := w.l.WaitReady(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("BENCH test activation %s, rejoin %s, total %s; failed one reverted in %s", ok.Activation.Round(time.Millisecond),
		ok.Rejoin.Round(time.Millisecond), ok.Duration.Round(time.Millisecond), nr.Duration.Round(time.Millisecond))
}

// TestLabModeBoot: boot sets the new boot default (switch-to-configuration boot activates nothing),
// restarts the container with pct reboot on the Proxmox host, and the node comes back healthy
// running the new default.
func TestLabModeBoot(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	n := w.l.Node("nats-2")
	adoptContainer(t, w, "nats-2")
	const newMax = 70 << 20
	tops := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = newMax })
	bootLog := filepath.Join(n.Dir(), "log", "boot.log")
	logBefore, _ := os.ReadFile(bootLog)
	w.r.Config.Mode = rollout.ModeBoot
	plan, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-boot", Commit: "c8", Targets: w.targets(tops, "c8", "nats-2")})
	nr := res.Node("nats-2")
	if plan.Nodes[0].Mode != rollout.ModeBoot || res.Status != rollout.StatusSuccess || nr.Mode != rollout.ModeBoot {
		t.Fatalf("plan %+v, rollout %s: %s", plan.Nodes[0], res.Status, res.Error)
	}
	if got := n.CurrentSystem(); got != tops["nats-2"] {
		t.Errorf("nats-2 runs %s, want %s", got, tops["nats-2"])
	}
	gens, _ := w.systems["nats-2"].Generations(ctx)
	if cur := rollout.CurrentGeneration(gens); cur.Toplevel != tops["nats-2"] || cur.Number != nr.Generation {
		t.Errorf("boot default %+v, want generation %d of the target", cur, nr.Generation)
	}
	// The node booted (its init ran: /run was emptied by the restart) into the new system.
	if booted, _ := os.Readlink(filepath.Join(n.Dir(), "run", "booted-system")); booted != tops["nats-2"] {
		t.Errorf("booted-system %q, want %s", booted, tops["nats-2"])
	}
	logAfter, _ := os.ReadFile(bootLog)
	mustContain(t, "boot log", string(logAfter[len(logBefore):]), "booting system configuration "+tops["nats-2"])
	if v, err := n.Varz(ctx); err != nil || v.JetStream.Config.MaxMemory != newMax {
		t.Errorf("nats-2 max_memory %d (%v)", v.JetStream.Config.MaxMemory, err)
	}
	if err := w.l.WaitReady(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "rollout log", w.log.String(), "container rebooted")
	t.Logf("BENCH boot: restart %s, rejoin %s, total %s", nr.Activation.Round(time.Millisecond), nr.Rejoin.Round(time.Millisecond),
		nr.Duration.Round(time.Millisecond))
}

// adoptContainer enters a node that lab up started into the pct shim's ledger as a running container
// (as pct knows the containers of a real cluster), and takes it out again at the end.
func adoptContainer(t *testing.T, w *labWorld, node string) {
	t.Helper()
	vmid := w.top.Nodes[node].Proxmox.VMID
	dir := filepath.Join(w.l.PVE().Dir(), "state", "pct")
	ledger := filepath.Join(dir, strconv.Itoa(vmid)+".json")
	if _, err := os.Stat(ledger); err == nil {
		t.Fatalf("pct knows %d already", vmid)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	entry := fmt.Sprintf(`{"vmid":%d,"status":"running","fresh":false,"ostemplate":"","template":"","ip":"","config":{"hostname":%q}}`, vmid, node)
	if err := os.WriteFile(ledger, []byte(entry), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(ledger); err != nil {
			t.Error(err)
		}
	})
}

// TestLabModeTestTimerReverts: the dead-man timer of a test activation, armed and never disarmed (the
// controller vanished), activates the previous system again by itself with switch-to-configuration
// test; the profile and the boot default are never touched.
func TestLabModeTestTimerReverts(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	n := w.l.Node("nats-2")
	sys := w.systems["nats-2"]
	tops := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = 74 << 20 })
	if _, err := sys.Copy(ctx, tops["nats-2"]); err != nil {
		t.Fatal(err)
	}
	before, err := sys.Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const id = "lab-test-timer"
	act, err := sys.ArmTest(ctx, id, 5*time.Second, w.baseline["nats-2"], tops["nats-2"], "cimdeploy-switch-nats-2-"+id)
	if err != nil || n.CurrentSystem() != tops["nats-2"] {
		t.Fatalf("arm and activate (test): %v, exit %d, runs %s", err, act.ExitCode, n.CurrentSystem())
	}
	waitFor(t, time.Minute, "the timer's revert", func() bool { return n.CurrentSystem() == w.baseline["nats-2"] })
	logs, _ := filepath.Glob(filepath.Join(n.Dir(), "state", "units", "cimdeploy-rollback-"+id+"*", "log"))
	var log string
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		log += string(data)
	}
	mustContain(t, "timer unit log", log, "did not confirm the test activation in time")
	if claimed, err := sys.Disarm(ctx, id); err != nil || claimed {
		t.Errorf("disarm after the timer fired: claimed %v, %v", claimed, err)
	}
	after, err := sys.Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || rollout.CurrentGeneration(after) != rollout.CurrentGeneration(before) {
		t.Errorf("profile changed: %+v, was %+v", after, before)
	}
	if init, _ := os.Readlink(filepath.Join(n.Dir(), "state", "sbin", "init")); init != w.baseline["nats-2"]+"/init" {
		t.Errorf("boot default (sbin/init) %s, want the baseline's", init)
	}
	if err := w.l.WaitReady(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestLabSwitchInhibitorsRead: SSHSystem reads the switch-inhibitors file the stub nixpkgs writes into
// every toplevel (an empty attribute set: the lab's systems set none), and says which systems are not
// in the node's store.
func TestLabSwitchInhibitorsRead(t *testing.T) {
	w := newLabWorld(t)
	base := w.baseline["nats-2"]
	missing := "/nix/store/00000000000000000000000000000000-nixos-system-missing"
	got, err := w.systems["nats-2"].SwitchInhibitors(t.Context(), base, missing)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Present || len(got[0].Values) != 0 || got[1].Present {
		t.Errorf("inhibitors %+v: want the baseline's present and empty, the missing system absent", got)
	}
	if raw, err := os.ReadFile(filepath.Join(base, "switch-inhibitors")); err != nil || string(raw) != "{}" {
		t.Errorf("the baseline's switch-inhibitors in the local store: %q %v", raw, err)
	}
}
