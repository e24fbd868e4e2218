package rollout_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/rollout"
	"github.com/cimdeploy/cimdeploy/rollout/rollouttest"
)

// sysWorld is one implementation of rollout.System under the contract suite (a lab node over SSH, or
// the fake), with what the suite needs to break it and to look at it from inside.
type sysWorld struct {
	sys rollout.System
	// base is what the node runs; other is another system the node can be switched to.
	base, other string
	// failNext makes the next activation exit with code (2 or 4).
	failNext func(t *testing.T, code int)
	// dropDuring runs activate and cuts the node's SSH connections while the activation runs.
	dropDuring func(t *testing.T, activate func())
	// running is /run/current-system as the node itself sees it.
	running func() string
	// short is a dead-man timer that fires within the test; settle bounds its rollback.
	short, settle time.Duration
}

func fakeSysWorld(t *testing.T) *sysWorld {
	s := rollouttest.NewSystem("nats-2", base("nats-2"))
	t.Cleanup(s.Close)
	return &sysWorld{
		sys: s, base: base("nats-2"), other: built("nats-2", "b"),
		failNext: func(t *testing.T, code int) { s.FailNextActivation(code) },
		dropDuring: func(t *testing.T, activate func()) {
			s.DropNextActivation()
			activate()
		},
		running: s.Running,
		short:   50 * time.Millisecond,
		settle:  2 * time.Second,
	}
}

// TestSystemContract runs the contract suite against every implementation.
func TestSystemContract(t *testing.T) {
	for _, impl := range []struct {
		name  string
		world func(t *testing.T) *sysWorld
	}{
		{name: "fake", world: fakeSysWorld},
		{name: "lab", world: labSysWorld},
	} {
		t.Run(impl.name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				test func(t *testing.T, w *sysWorld)
			}{
				{name: "ProfileAndGenerations", test: testProfileAndGenerations},
				{name: "DisarmedTimerNeverFires", test: testDisarmedTimer},
				{name: "TimerRollsBackWithoutController", test: testTimerFires},
				{name: "ActivationExitCodes", test: testActivationExitCodes},
				{name: "ActivationSurvivesDroppedConnection", test: testActivationSurvivesDrop},
				{name: "ProbeUsesANewConnection", test: testProbe},
				{name: "ArmActivateInOneGo", test: testArmActivate},
			} {
				t.Run(tc.name, func(t *testing.T) { tc.test(t, impl.world(t)) })
			}
		})
	}
}

// uniqueID is a unit id of its own for every test.
func uniqueID(t *testing.T) string {
	return fmt.Sprintf("t%d", time.Now().UnixNano())
}

// current is the node's current generation, which must hold the system it runs.
func current(t *testing.T, w *sysWorld) rollout.Generation {
	t.Helper()
	gens, err := w.sys.Generations(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cur := rollout.CurrentGeneration(gens)
	if cur.Number == 0 || cur.Toplevel != w.base {
		t.Fatalf("current generation %+v, want one with %s (all: %+v)", cur, w.base, gens)
	}
	return cur
}

// switchTo sets the profile to other (Arm with a timer it disarms at once) and returns the new
// generation; it activates nothing.
func switchTo(t *testing.T, w *sysWorld, cur rollout.Generation) int {
	t.Helper()
	if _, err := w.sys.Copy(t.Context(), w.other); err != nil {
		t.Fatal(err)
	}
	id := uniqueID(t)
	n, err := w.sys.Arm(t.Context(), id, time.Hour, cur, rollout.Generation{Toplevel: w.other})
	if err != nil {
		t.Fatal(err)
	}
	if claimed, err := w.sys.Disarm(t.Context(), id); err != nil || !claimed {
		t.Fatalf("Disarm = %v, %v", claimed, err)
	}
	return n
}

// back switches the node back to generation cur and deletes gen.
func back(t *testing.T, w *sysWorld, cur rollout.Generation, gen int) {
	t.Helper()
	if err := w.sys.SwitchGeneration(t.Context(), cur.Number); err != nil {
		t.Fatal(err)
	}
	if w.running() != w.base {
		if _, err := w.sys.Activate(t.Context(), "cimdeploy-test-back-"+uniqueID(t), w.base); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.sys.DeleteGenerations(t.Context(), gen); err != nil {
		t.Fatal(err)
	}
}

func testProfileAndGenerations(t *testing.T, w *sysWorld) {
	ctx := t.Context()
	cur := current(t, w)
	if got, err := w.sys.Current(ctx); err != nil || got != w.base {
		t.Fatalf("Current = %q, %v; want %s", got, err, w.base)
	}
	n := switchTo(t, w, cur)
	if n <= cur.Number {
		t.Errorf("Arm set the profile to generation %d, after %d", n, cur.Number)
	}
	gens, err := w.sys.Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g, ok := rollout.FindGeneration(gens, n)
	if !ok || !g.Current || g.Toplevel != w.other || g.Date.IsZero() || time.Since(g.Date) > time.Hour {
		t.Errorf("generation %d: %+v (all %+v)", n, g, gens)
	}
	if w.running() != w.base {
		t.Errorf("Arm activated: the node runs %s", w.running())
	}
	// An id whose timer is armed already: refused before anything changed.
	id := uniqueID(t)
	if _, err := w.sys.Arm(ctx, id, time.Hour, cur, rollout.Generation{Number: n}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.sys.Arm(ctx, id, time.Hour, cur, rollout.Generation{Number: cur.Number}); !errors.Is(err, rollout.ErrNotArmed) {
		t.Errorf("Arm with an armed id: %v, want ErrNotArmed", err)
	}
	if gens, _ := w.sys.Generations(ctx); rollout.CurrentGeneration(gens).Number != n {
		t.Errorf("a refused Arm changed the profile: %+v", gens)
	}
	if claimed, err := w.sys.Disarm(ctx, id); err != nil || !claimed {
		t.Fatalf("Disarm = %v, %v", claimed, err)
	}
	// Back to an existing generation, through Arm and through SwitchGeneration.
	id = uniqueID(t)
	if got, err := w.sys.Arm(ctx, id, time.Hour, cur, rollout.Generation{Number: cur.Number}); err != nil || got != cur.Number {
		t.Fatalf("Arm back to generation %d = %d, %v", cur.Number, got, err)
	}
	if claimed, err := w.sys.Disarm(ctx, id); err != nil || !claimed {
		t.Fatalf("Disarm = %v, %v", claimed, err)
	}
	if err := w.sys.SwitchGeneration(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := w.sys.SwitchGeneration(ctx, cur.Number); err != nil {
		t.Fatal(err)
	}
	// The current generation is never deleted; another one is.
	if err := w.sys.DeleteGenerations(ctx, n, cur.Number, 99999); err != nil {
		t.Fatal(err)
	}
	gens, _ = w.sys.Generations(ctx)
	if _, ok := rollout.FindGeneration(gens, n); ok || rollout.CurrentGeneration(gens).Number != cur.Number {
		t.Errorf("after deleting %d: %+v", n, gens)
	}
}

func testDisarmedTimer(t *testing.T, w *sysWorld) {
	ctx := t.Context()
	cur := current(t, w)
	id := uniqueID(t)
	if _, err := w.sys.Copy(ctx, w.other); err != nil {
		t.Fatal(err)
	}
	n, err := w.sys.Arm(ctx, id, w.short, cur, rollout.Generation{Toplevel: w.other})
	if err != nil {
		t.Fatal(err)
	}
	defer back(t, w, cur, n)
	claimed, err := w.sys.Disarm(ctx, id)
	if err != nil || !claimed {
		t.Fatalf("Disarm = %v, %v; want claimed", claimed, err)
	}
	// Well past its time, it has done nothing.
	timer := time.NewTimer(w.short + w.settle/4)
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	gens, _ := w.sys.Generations(ctx)
	if g := rollout.CurrentGeneration(gens); g.Number != n {
		t.Errorf("a disarmed timer switched the profile to %+v", g)
	}
}

func testTimerFires(t *testing.T, w *sysWorld) {
	ctx := t.Context()
	cur := current(t, w)
	id := uniqueID(t)
	if _, err := w.sys.Copy(ctx, w.other); err != nil {
		t.Fatal(err)
	}
	n, err := w.sys.Arm(ctx, id, w.short+w.settle/4, cur, rollout.Generation{Toplevel: w.other})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.sys.Activate(ctx, "cimdeploy-test-"+id, w.other); err != nil {
		t.Fatal(err)
	}
	if w.running() != w.other {
		t.Fatalf("runs %s after the activation", w.running())
	}
	// No controller: the node goes back by itself.
	waitFor(t, w.short+w.settle*2, "the node rolled itself back", func() bool { return w.running() == w.base })
	waitFor(t, w.settle, "the failed generation deleted", func() bool {
		gens, err := w.sys.Generations(ctx)
		_, still := rollout.FindGeneration(gens, n)
		return err == nil && !still && rollout.CurrentGeneration(gens).Number == cur.Number
	})
	if claimed, err := w.sys.Disarm(ctx, id); err != nil || claimed {
		t.Errorf("Disarm after the timer fired = %v, %v; want false", claimed, err)
	}
}

func testActivationExitCodes(t *testing.T, w *sysWorld) {
	ctx := t.Context()
	cur := current(t, w)
	n := switchTo(t, w, cur)
	defer back(t, w, cur, n)

	w.failNext(t, 2)
	act, err := w.sys.Activate(ctx, "cimdeploy-test-"+uniqueID(t), w.other)
	var ae *rollout.ActivationError
	if !errors.As(err, &ae) || ae.Code != 2 || act.ExitCode != 2 {
		t.Fatalf("activation with exit 2: %+v, %v", act, err)
	}
	// As on NixOS: the activation script points /run/current-system at the new system before it
	// reports its failure, and switch-to-configuration starts the units all the same.
	if w.running() != w.other {
		t.Errorf("exit 2 leaves the new system current on NixOS; runs %s", w.running())
	}
	w.failNext(t, 4)
	act, err = w.sys.Activate(ctx, "cimdeploy-test-"+uniqueID(t), w.other)
	if !errors.As(err, &ae) || ae.Code != 4 || !strings.Contains(err.Error(), "units failed") {
		t.Fatalf("activation with exit 4: %+v, %v", act, err)
	}
	if w.running() != w.other {
		t.Errorf("exit 4 leaves the new system active; runs %s", w.running())
	}
	act, err = w.sys.Activate(ctx, "cimdeploy-test-"+uniqueID(t), w.other)
	if err != nil || act.ExitCode != 0 || act.Duration <= 0 {
		t.Errorf("activation: %+v, %v", act, err)
	}
}

func testActivationSurvivesDrop(t *testing.T, w *sysWorld) {
	ctx := t.Context()
	cur := current(t, w)
	n := switchTo(t, w, cur)
	defer back(t, w, cur, n)
	var act rollout.Activation
	var err error
	w.dropDuring(t, func() { act, err = w.sys.Activate(ctx, "cimdeploy-test-"+uniqueID(t), w.other) })
	if err != nil || act.ExitCode != 0 || !act.Reconnected {
		t.Fatalf("activation with a dropped connection: %+v, %v", act, err)
	}
	if w.running() != w.other {
		t.Errorf("runs %s", w.running())
	}
}

func testProbe(t *testing.T, w *sysWorld) {
	got, err := w.sys.Probe(t.Context())
	if err != nil || got != w.base {
		t.Fatalf("Probe = %q, %v; want %s", got, err, w.base)
	}
}

func testArmActivate(t *testing.T, w *sysWorld) {
	ctx := t.Context()
	cur := current(t, w)
	if _, err := w.sys.Copy(ctx, w.other); err != nil {
		t.Fatal(err)
	}
	// An id whose timer is armed already: refused before anything changed, nothing activated.
	id := uniqueID(t)
	if _, err := w.sys.Arm(ctx, id, time.Hour, cur, rollout.Generation{Number: cur.Number}); err != nil {
		t.Fatal(err)
	}
	gen, _, err := w.sys.ArmActivate(ctx, id, time.Hour, cur, rollout.Generation{Toplevel: w.other}, "cimdeploy-test-"+uniqueID(t))
	if !errors.Is(err, rollout.ErrNotArmed) || gen != 0 {
		t.Errorf("ArmActivate with an armed id = %d, %v; want ErrNotArmed", gen, err)
	}
	if gens, _ := w.sys.Generations(ctx); rollout.CurrentGeneration(gens).Number != cur.Number || w.running() != w.base {
		t.Errorf("a refused ArmActivate changed the node: runs %s, generations %+v", w.running(), gens)
	}
	if claimed, err := w.sys.Disarm(ctx, id); err != nil || !claimed {
		t.Fatalf("Disarm = %v, %v", claimed, err)
	}

	// Arm, a new generation, activated; the timer is armed (Disarm claims it).
	id = uniqueID(t)
	gen, act, err := w.sys.ArmActivate(ctx, id, time.Hour, cur, rollout.Generation{Toplevel: w.other}, "cimdeploy-test-"+uniqueID(t))
	if err != nil || gen <= cur.Number || act.ExitCode != 0 || act.Duration <= 0 {
		t.Fatalf("ArmActivate = %d, %+v, %v", gen, act, err)
	}
	defer back(t, w, cur, gen)
	if w.running() != w.other {
		t.Errorf("runs %s, want %s", w.running(), w.other)
	}
	if claimed, err := w.sys.Disarm(ctx, id); err != nil || !claimed {
		t.Fatalf("Disarm = %v, %v; want claimed", claimed, err)
	}

	// A failing activation: the generation is set and returned with the activation's error.
	w.failNext(t, rollout.ExitUnitsFailed)
	id = uniqueID(t)
	got, act, err := w.sys.ArmActivate(ctx, id, time.Hour, cur, rollout.Generation{Number: gen, Toplevel: w.other}, "cimdeploy-test-"+uniqueID(t))
	var ae *rollout.ActivationError
	if !errors.As(err, &ae) || ae.Code != rollout.ExitUnitsFailed || got != gen || act.ExitCode != rollout.ExitUnitsFailed {
		t.Errorf("ArmActivate with a failing activation = %d, %+v, %v; want generation %d, exit %d", got, act, err, gen, rollout.ExitUnitsFailed)
	}
	if claimed, err := w.sys.Disarm(ctx, id); err != nil || !claimed {
		t.Fatalf("Disarm = %v, %v", claimed, err)
	}
}
