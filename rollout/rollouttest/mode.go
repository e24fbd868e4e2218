package rollouttest

import (
	"context"
	"fmt"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

var _ rollout.ModeSystem = (*System)(nil)

// SetInhibitors gives toplevel's system the switch inhibitors values (nixpkgs'
// system.switch.inhibitors): switch and test activations refuse to go across a change, as
// switch-to-configuration's pre-switch check does (exit 1, nothing changed).
func (s *System) SetInhibitors(toplevel string, values map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inhibitors == nil {
		s.inhibitors = map[string]map[string]string{}
	}
	s.inhibitors[toplevel] = values
}

// Boot is what a restart of the node's container does inside it: /run is emptied (every dead-man
// timer and its claim go) and the node comes up running its boot default, the profile's current
// generation.
func (s *System) Boot() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.timers {
		t.Stop()
		delete(s.timers, id)
	}
	s.claimed = map[string]bool{}
	s.current = rollout.CurrentGeneration(s.gens).Toplevel
	s.logf("boot %s", s.current)
}

// inhibitedLocked is the pre-switch check of switch-to-configuration: the inhibitors of the running
// system that toplevel has with another value.
func (s *System) inhibitedLocked(toplevel string) []rollout.InhibitorChange {
	return rollout.DiffInhibitors(s.inhibitors[s.current], s.inhibitors[toplevel])
}

// activateAs is `<toplevel>/bin/switch-to-configuration action` in unit, with the knobs: switch and
// test refuse across changed switch inhibitors (exit 1) and make toplevel the running system (but
// with exit 1); boot activates nothing (the profile is the boot default).
func (s *System) activateAs(ctx context.Context, unit, toplevel string, action rollout.Mode) (rollout.Activation, error) {
	start := time.Now()
	act := rollout.Activation{Unit: unit}
	if err := s.check(ctx, "activate "+unit); err != nil {
		return act, err
	}
	s.mu.Lock()
	code := 0
	if len(s.nextExit) > 0 {
		code, s.nextExit = s.nextExit[0], s.nextExit[1:]
	}
	delay, drop := s.delay, s.dropNext
	s.dropNext = false
	s.activations = append(s.activations, unit)
	s.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return act, fmt.Errorf("activation %s: %w (it goes on in its unit on the node)", unit, ctx.Err())
		}
	}
	act.Output = []string{"activating the configuration..."}
	s.mu.Lock()
	if changes := s.inhibitedLocked(toplevel); action != rollout.ModeBoot && len(changes) > 0 {
		code = 1
		act.Output = []string{"Checking switch inhibitors...", "There are changes to critical components of the system:"}
		for _, c := range changes {
			act.Output = append(act.Output, c.String())
		}
		act.Output = append(act.Output, "Pre-switch check 'switchInhibitors' failed", "Pre-switch checks failed")
	}
	if code != 1 && action != rollout.ModeBoot {
		s.current = toplevel
		s.rejoinedAt = s.now().Add(s.rejoin)
	}
	s.logf("activate %s (%s): exit %d", toplevel, action, code)
	s.mu.Unlock()
	act.ExitCode, act.Reconnected, act.Duration = code, drop, time.Since(start)
	act.Output = append(act.Output, fmt.Sprintf("exit %d", code))
	if code != 0 {
		return act, &rollout.ActivationError{Unit: unit, Code: code, Lines: act.Output}
	}
	return act, nil
}

// ActivateAction implements rollout.ModeSystem.
func (s *System) ActivateAction(ctx context.Context, unit, toplevel string, action rollout.Mode) (rollout.Activation, error) {
	return s.activateAs(ctx, unit, toplevel, action)
}

// armLocked starts timer id that runs fire after d; ErrNotArmed when it runs already.
func (s *System) armLocked(id string, d time.Duration, fire func()) error {
	if _, ok := s.timers[id]; ok && !s.claimed[id] {
		return fmt.Errorf("%w: %w", rollout.ErrNotArmed, &remote.Error{Host: s.Name(), Step: "arm", Err: &remote.ExitError{Code: 1,
			Stderr: "Failed to start transient timer unit: Unit cimdeploy-rollback-" + id + ".timer was already loaded"}})
	}
	s.timers[id] = time.AfterFunc(d, fire)
	return nil
}

// ArmTest implements rollout.ModeSystem: the timer, when it fires, activates back (test); the
// profile is never touched.
func (s *System) ArmTest(ctx context.Context, id string, d time.Duration, back, to, unit string) (rollout.Activation, error) {
	if err := s.check(ctx, "arm"); err != nil {
		return rollout.Activation{Unit: unit}, fmt.Errorf("%w: %w", rollout.ErrNotArmed, err)
	}
	s.mu.Lock()
	err := s.armLocked(id, d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.claimed[id] {
			return
		}
		s.claimed[id] = true
		s.logf("timer %s fired", id)
		s.current = back
	})
	if err == nil {
		s.logf("arm %s for %s back to %s (test)", id, d, back)
	}
	s.mu.Unlock()
	if err != nil {
		return rollout.Activation{Unit: unit}, err
	}
	return s.activateAs(ctx, unit, to, rollout.ModeTest)
}

// ArmBoot implements rollout.ModeSystem: the profile is set as Arm sets it; the timer, when it fires,
// switches the profile back and deletes the generation that was current, activating nothing.
func (s *System) ArmBoot(ctx context.Context, id string, d time.Duration, back, to rollout.Generation, unit string) (int, rollout.Activation, error) {
	act := rollout.Activation{Unit: unit}
	if err := s.check(ctx, "arm"); err != nil {
		return 0, act, fmt.Errorf("%w: %w", rollout.ErrNotArmed, err)
	}
	s.mu.Lock()
	err := s.armLocked(id, d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.claimed[id] {
			return
		}
		s.claimed[id] = true
		bad := rollout.CurrentGeneration(s.gens).Number
		s.logf("timer %s fired (boot)", id)
		if s.switchLocked(back.Number) == nil && bad != back.Number {
			s.deleteLocked(bad)
		}
	})
	if err != nil {
		s.mu.Unlock()
		return 0, act, err
	}
	s.logf("arm %s for %s back to generation %d (boot)", id, d, back.Number)
	gen := to.Number
	if gen != 0 {
		err = s.switchLocked(gen)
	} else if len(s.Has(to.Toplevel)) == 0 {
		err = &remote.Error{Host: s.Name(), Step: "set the system profile", Err: &remote.ExitError{Code: 1,
			Stderr: fmt.Sprintf("error: path '%s' is not valid", to.Toplevel)}}
	} else {
		gen = s.setProfileLocked(to.Toplevel)
	}
	s.mu.Unlock()
	if err != nil {
		return 0, act, err
	}
	act, err = s.activateAs(ctx, unit, to.Toplevel, rollout.ModeBoot)
	return gen, act, err
}

// SwitchInhibitors implements rollout.ModeSystem: every toplevel is present.
func (s *System) SwitchInhibitors(ctx context.Context, toplevels ...string) ([]rollout.Inhibitors, error) {
	if err := s.check(ctx, "read the switch inhibitors"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]rollout.Inhibitors, len(toplevels))
	for i, t := range toplevels {
		out[i] = rollout.Inhibitors{Present: true, Values: s.inhibitors[t]}
	}
	return out, nil
}
