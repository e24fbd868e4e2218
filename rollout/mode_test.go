package rollout_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/rollout"
	"github.com/cimdeploy/cimdeploy/rollout/rollouttest"
)

// bootable gives node a running container on the fake Proxmox host whose restart boots the node's
// boot default.
func (w *fakeWorld) bootable(node string) {
	w.proxmox.AddContainer(rollout.ContainerFor(node, w.top), true)
	w.proxmox.Attach(w.systems[node].Node)
	w.proxmox.OnReboot(node, w.systems[node].Boot)
}

func TestModeParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want rollout.Mode
		bad  bool
	}{
		{in: "", want: rollout.ModeSwitch},
		{in: "switch", want: rollout.ModeSwitch},
		{in: "test", want: rollout.ModeTest},
		{in: "boot", want: rollout.ModeBoot},
		{in: "dry-activate", bad: true},
		{in: "Switch", bad: true},
	} {
		got, err := rollout.ParseMode(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseMode(%q) = %q, %v", tc.in, got, err)
		}
	}
	cfg := fastConfig()
	cfg.SecretsOwner, cfg.Mode = "nats", "reboot"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("mode reboot accepted")
	}
	mustContain(t, "error", err.Error(), "CIMDEPLOY_ROLLOUT_MODE (--mode)", `"reboot"`, "want switch, test or boot")
}

func TestModeDiffInhibitors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name            string
		running, target map[string]string
		want            []string
	}{
		{name: "none", want: nil},
		{name: "same", running: map[string]string{"systemd": "a"}, target: map[string]string{"systemd": "a"}},
		{name: "changed", running: map[string]string{"systemd": "a", "dbus-implementation": "dbus"},
			target: map[string]string{"systemd": "b", "dbus-implementation": "broker"},
			want:   []string{"dbus-implementation : dbus -> broker", "systemd : a -> b"}},
		// Only a key both systems have counts (switchable-system.nix: select(.key | in($new))).
		{name: "added or removed", running: map[string]string{"old": "x"}, target: map[string]string{"new": "y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range rollout.DiffInhibitors(tc.running, tc.target) {
				got = append(got, c.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// A test activation runs the target without a new generation, records it, and a later switch of
// another commit goes ahead from there (the node's running system is no generation, but its record
// says why).
func TestModeTestActivationThenSwitch(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.r.Config.Mode = rollout.ModeTest
	plan, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "canary", Commit: "b", Targets: w.targets("b", "nats-3")})
	if plan.Mode != rollout.ModeTest || plan.Nodes[0].Mode != rollout.ModeTest {
		t.Fatalf("plan %+v", plan)
	}
	mustContain(t, "reason", plan.Nodes[0].Reason, "test activation", "boot default stays generation 1")
	nr := res.Node("nats-3")
	if res.Status != rollout.StatusSuccess || nr.Mode != rollout.ModeTest || nr.Duration <= 0 {
		t.Fatalf("result %s %s %+v", res.Status, res.Error, nr)
	}
	s := w.systems["nats-3"]
	gens, _ := s.Generations(t.Context())
	if s.Running() != built("nats-3", "b") || !slices.Equal(generationNumbers(gens), []int{1}) || !gens[0].Current {
		t.Errorf("runs %s, generations %+v: want the target running, the profile untouched", s.Running(), gens)
	}
	mustContain(t, "node log", strings.Join(s.Log(), "\n"), "(test): exit 0", "disarm canary")
	st, _, _ := rollout.ReadState(t.Context(), w.store, "nats-3")
	if st.Test == nil || st.Test.Toplevel != built("nats-3", "b") || st.Test.Commit != "b" || st.Test.RunID != "canary" ||
		st.Toplevel != base("nats-3") || st.Generation != 1 {
		t.Fatalf("record %+v (test %+v)", st, st.Test)
	}

	// The same commit as a switch: not skipped (the profile does not hold it yet).
	w.r.Config.Mode = rollout.ModeSwitch
	plan, res, _ = w.rollout(t.Context(), t, rollout.Request{RunID: "promote", Commit: "b", Targets: w.targets("b", "nats-3")})
	if np := plan.Nodes[0]; np.Action != rollout.ActionSwitch || !np.Testing || np.CurrentCommit != "b" || plan.Refused() {
		t.Fatalf("plan %+v problems %v", np, plan.Problems)
	}
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("promote: %s %s", res.Status, res.Error)
	}
	gens, _ = s.Generations(t.Context())
	if cur := rollout.CurrentGeneration(gens); cur.Toplevel != built("nats-3", "b") || cur.Number != 2 {
		t.Errorf("boot default %+v", cur)
	}
	st, _, _ = rollout.ReadState(t.Context(), w.store, "nats-3")
	if st.Test != nil || st.Toplevel != built("nats-3", "b") || st.Generation != 2 {
		t.Errorf("record after the switch %+v", st)
	}
}

// A switch from a test activation that fails goes back to the boot default, and the record no longer
// says the node runs a test activation.
func TestModeSwitchFromTestActivationRollsBackToBootDefault(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.r.Config.Mode = rollout.ModeTest
	if _, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "canary", Commit: "b", Targets: w.targets("b", "nats-2")}); res.Status != rollout.StatusSuccess {
		t.Fatalf("canary: %s %s", res.Status, res.Error)
	}
	w.r.Config.Mode = rollout.ModeSwitch
	w.cluster.Break(built("nats-2", "c"))
	plan, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "c", Targets: w.targets("c", "nats-2")})
	if plan.Refused() {
		t.Fatalf("refused: %v", plan.Problems)
	}
	nr := res.Node("nats-2")
	if res.Status != rollout.StatusFailed || !nr.RolledBack || nr.FromGeneration != 1 {
		t.Fatalf("result %s %+v", res.Status, nr)
	}
	s := w.systems["nats-2"]
	gens, _ := s.Generations(t.Context())
	if s.Running() != base("nats-2") || !slices.Equal(generationNumbers(gens), []int{1}) {
		t.Errorf("runs %s, generations %v: want the boot default", s.Running(), generationNumbers(gens))
	}
	st, _, _ := rollout.ReadState(t.Context(), w.store, "nats-2")
	if st.Test != nil || st.FailedCommit != "c" || st.Toplevel != base("nats-2") {
		t.Errorf("record %+v (test %+v)", st, st.Test)
	}
	w.healthy(t)
}

// A test activation whose gate fails is reverted: the node runs what it ran, the profile was never
// touched, the commit is recorded as failed.
func TestModeTestActivationFailingGateReverts(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.r.Config.Mode = rollout.ModeTest
	w.cluster.Break(built("nats-2", "bad"))
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "bad", Targets: w.targets("bad", "nats-2")})
	nr := res.Node("nats-2")
	if res.Status != rollout.StatusFailed || !nr.RolledBack {
		t.Fatalf("result %s %+v", res.Status, nr)
	}
	mustContain(t, "error", nr.Error, "health gate", "reverted: it runs")
	s := w.systems["nats-2"]
	gens, _ := s.Generations(t.Context())
	if s.Running() != base("nats-2") || !slices.Equal(generationNumbers(gens), []int{1}) {
		t.Errorf("runs %s, generations %v", s.Running(), generationNumbers(gens))
	}
	mustContain(t, "node log", strings.Join(s.Log(), "\n"), "activate "+base("nats-2")+" (test): exit 0")
	if timers := s.Timers(); len(timers) != 0 {
		t.Errorf("timers left armed: %v", timers)
	}
	st, _, _ := rollout.ReadState(t.Context(), w.store, "nats-2")
	if st.Test != nil || st.FailedCommit != "bad" {
		t.Errorf("record %+v", st)
	}
	w.healthy(t)
}

// The dead-man timer of a test activation activates the previous system again by itself when the
// controller does not confirm in time; the profile stays as it was.
func TestModeTestActivationTimerReverts(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.r.Config.Mode = rollout.ModeTest
	w.r.Config.ConfirmTimeout = 50 * time.Millisecond // shorter than the gate
	s := w.systems["nats-2"]
	s.FailProbes(rollouttest.ErrUnreachable)
	go func() {
		waitFor(t, 5*time.Second, "timer fired", func() bool {
			return s.Running() == base("nats-2") && len(s.Activations()) > 0
		})
		s.FailProbes(nil)
	}()
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b", "nats-2")})
	if nr := res.Node("nats-2"); res.Status != rollout.StatusFailed || !nr.RolledBack {
		t.Fatalf("result %s %+v", res.Status, nr)
	}
	mustContain(t, "node log", strings.Join(s.Log(), "\n"), "timer r fired")
	gens, _ := s.Generations(t.Context())
	if s.Running() != base("nats-2") || !slices.Equal(generationNumbers(gens), []int{1}) {
		t.Errorf("runs %s, generations %v", s.Running(), generationNumbers(gens))
	}
}

// Boot sets the boot default and restarts the container (pct reboot) into it.
func TestModeBootRestartsTheContainer(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.bootable("nats-2")
	w.r.Config.Mode = rollout.ModeBoot
	plan, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b", "nats-2")})
	mustContain(t, "reason", plan.Nodes[0].Reason, "boot: set the boot default, restart the container")
	nr := res.Node("nats-2")
	if res.Status != rollout.StatusSuccess || nr.Mode != rollout.ModeBoot || nr.Generation != 2 || nr.Duration <= 0 {
		t.Fatalf("result %s %s %+v", res.Status, res.Error, nr)
	}
	s := w.systems["nats-2"]
	log := strings.Join(s.Log(), "\n")
	mustContain(t, "node log", log, "(boot): exit 0", "boot "+built("nats-2", "b"), "disarm r-booted")
	if s.Running() != built("nats-2", "b") || len(s.Timers()) != 0 {
		t.Errorf("runs %s, timers %v", s.Running(), s.Timers())
	}
	st, _, _ := rollout.ReadState(t.Context(), w.store, "nats-2")
	if st.Toplevel != built("nats-2", "b") || st.Generation != 2 {
		t.Errorf("record %+v", st)
	}
	w.healthy(t)
}

// A boot whose gate fails: the profile goes back, the failed generation is deleted and the container
// restarts into the previous generation.
func TestModeBootFailingGateRollsBackWithARestart(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.bootable("nats-2")
	w.r.Config.Mode = rollout.ModeBoot
	w.cluster.Break(built("nats-2", "bad"))
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "bad", Targets: w.targets("bad", "nats-2")})
	nr := res.Node("nats-2")
	if res.Status != rollout.StatusFailed || !nr.RolledBack {
		t.Fatalf("result %s %+v", res.Status, nr)
	}
	s := w.systems["nats-2"]
	log := strings.Join(s.Log(), "\n")
	if n := strings.Count(log, "boot "+base("nats-2")); n != 1 {
		t.Errorf("booted the previous generation %d times, want once:\n%s", n, log)
	}
	gens, _ := s.Generations(t.Context())
	if s.Running() != base("nats-2") || !slices.Equal(generationNumbers(gens), []int{1}) || !gens[0].Current {
		t.Errorf("runs %s, generations %+v", s.Running(), gens)
	}
	w.healthy(t)
}

// Changed switch inhibitors make a switch a boot with a restart, said in the plan; a test activation
// across them is refused; without a Proxmox host to restart the container the switch is refused.
func TestModeInhibitorsMakeASwitchABoot(t *testing.T) {
	t.Parallel()
	inhibit := func(w *fakeWorld, node string) {
		w.systems[node].SetInhibitors(base(node), map[string]string{"systemd": "/nix/store/aaa-systemd-257", "kernel": "k"})
		w.systems[node].SetInhibitors(built(node, "b"), map[string]string{"systemd": "/nix/store/bbb-systemd-258", "kernel": "k"})
	}
	t.Run("switch", func(t *testing.T) {
		t.Parallel()
		w := newFakeWorld(t, 3)
		w.bootable("nats-2")
		inhibit(w, "nats-2")
		plan, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b", "nats-2", "nats-3")})
		byNode := map[string]rollout.NodePlan{}
		for _, np := range plan.Nodes {
			byNode[np.Node] = np
		}
		if np := byNode["nats-2"]; np.Mode != rollout.ModeBoot || len(np.Inhibitors) != 1 {
			t.Fatalf("nats-2 plan %+v", np)
		}
		mustContain(t, "reason", byNode["nats-2"].Reason, "switch inhibitors changed",
			"systemd : /nix/store/aaa-systemd-257 -> /nix/store/bbb-systemd-258", "boot and restart the container")
		if np := byNode["nats-3"]; np.Mode != "" {
			t.Errorf("nats-3 plan %+v", np)
		}
		if res.Status != rollout.StatusSuccess || res.Node("nats-2").Mode != rollout.ModeBoot {
			t.Fatalf("result %s %s", res.Status, res.Error)
		}
		if s := w.systems["nats-2"]; s.Running() != built("nats-2", "b") {
			t.Errorf("nats-2 runs %s", s.Running())
		}
	})
	t.Run("test", func(t *testing.T) {
		t.Parallel()
		w := newFakeWorld(t, 3)
		inhibit(w, "nats-2")
		w.r.Config.Mode = rollout.ModeTest
		plan, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b", "nats-2")})
		if res.Status != rollout.StatusRefused || plan.Nodes[0].Action != rollout.ActionRefuse {
			t.Fatalf("result %s, plan %+v", res.Status, plan.Nodes[0])
		}
		mustContain(t, "reason", plan.Nodes[0].Reason, "--mode test cannot activate across changed switch inhibitors", "use --mode boot")
	})
	t.Run("no Proxmox host", func(t *testing.T) {
		t.Parallel()
		w := newFakeWorld(t, 3)
		inhibit(w, "nats-2")
		w.r.Proxmox = nil
		plan, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b", "nats-2")})
		if res.Status != rollout.StatusRefused {
			t.Fatalf("result %s, plan %+v", res.Status, plan.Nodes[0])
		}
		mustContain(t, "reason", plan.Nodes[0].Reason, "needs the Proxmox host (CIMDEPLOY_PROXMOX_HOST)")
	})
	t.Run("fake refuses a live switch", func(t *testing.T) {
		t.Parallel()
		// Without the plan's detection, switch-to-configuration itself refuses: exit 1, nothing changed.
		w := newFakeWorld(t, 3)
		inhibit(w, "nats-2")
		s := w.systems["nats-2"]
		act, err := s.Activate(t.Context(), "u", built("nats-2", "b"))
		if err == nil || act.ExitCode != 1 || s.Running() != base("nats-2") {
			t.Fatalf("exit %d, %v, runs %s", act.ExitCode, err, s.Running())
		}
		mustContain(t, "output", strings.Join(act.Output, "\n"), "There are changes to critical components of the system", "Pre-switch checks failed")
	})
}

// --revert-all after test activations activates each node's previous system again, as a test
// activation: the profiles stay untouched throughout.
func TestModeTestRevertAll(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.r.Config.Mode = rollout.ModeTest
	w.cluster.Break(built("nats-1", "b")) // the leader goes last
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b"), RevertAll: true})
	if res.Status != rollout.StatusFailed || len(res.Reverted) != 2 {
		t.Fatalf("result %s %s, reverted %+v", res.Status, res.Error, res.Reverted)
	}
	for _, rv := range res.Reverted {
		if rv.Status != rollout.StatusSuccess || rv.Mode != rollout.ModeTest {
			t.Errorf("revert of %s: %+v", rv.Node, rv)
		}
	}
	for _, name := range w.top.NodeNames() {
		s := w.systems[name]
		gens, _ := s.Generations(t.Context())
		if s.Running() != base(name) || !slices.Equal(generationNumbers(gens), []int{1}) {
			t.Errorf("%s runs %s, generations %v", name, s.Running(), generationNumbers(gens))
		}
		if st, _, _ := rollout.ReadState(t.Context(), w.store, name); st.Test != nil {
			t.Errorf("%s is recorded as running a test activation of %s", name, st.Test.Toplevel)
		}
	}
	w.healthy(t)
}
