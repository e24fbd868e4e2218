package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
)

// rebootProblem is why the rollout cannot restart containers ("" when it can).
func (r *Rollout) rebootProblem() string {
	if _, ok := r.Proxmox.(remote.Rebooter); !ok {
		return "restarting its container needs the Proxmox host (CIMDEPLOY_PROXMOX_HOST)"
	}
	return ""
}

// isNotArmed reports whether err says the dead-man timer never started (nothing changed).
func isNotArmed(err error) bool { return errors.Is(err, ErrNotArmed) }

// switchBoot makes the target the boot default and restarts the container into it: guard, copy; arm
// the dead-man timer (it sets the profile back and runs the previous generation's `boot`), set the
// profile and run `switch-to-configuration boot` (nothing activated) in one round trip; pct reboot,
// wait for SSH; arm a dead-man timer again (the restart emptied /run and the first one with it: this
// one switches the profile back and activates the previous generation live); gate; disarm; record.
// A failure from the profile on is rolled back with rollBackBoot.
func (r *Rollout) switchBoot(ctx context.Context, plan *Plan, np NodePlan, id ids, peers int, st Step, log *slog.Logger) (res NodeResult) {
	const steps = 6
	start := r.now()
	nr, fail := r.modeResult(np, log)
	defer func() { res.Duration = r.now().Sub(start) }() // on the copy returned
	ms, ok := r.Systems[np.Node].(ModeSystem)
	rb, canReboot := r.Proxmox.(remote.Rebooter)
	switch {
	case !ok:
		return fail("boot", fmt.Errorf("the node's connection cannot activate in mode %s", ModeBoot))
	case !canReboot:
		return fail("boot", errors.New(r.rebootProblem()))
	}
	cur, gens, failed := r.modeStart(ctx, np, nr, st, steps, fail)
	if failed != nil {
		return *failed
	}
	back := switchBack(np, cur, gens)
	if back.Number == 0 {
		return fail("guard", fmt.Errorf("the running system %s is no generation of the profile", cur))
	}
	nr.FromGeneration = back.Number
	node := context.WithoutCancel(ctx)
	vmid := r.Topology.Nodes[np.Node].Proxmox.VMID
	rebooted := false
	rollBack := func(what string, cause error) NodeResult {
		fail(what, cause)
		bad := nr.Generation
		if np.TargetGeneration != 0 {
			bad = 0 // an existing generation is not ours to delete
		}
		if rerr := r.rollBackBoot(node, ms, rb, vmid, id, back, bad, rebooted, peers, log); rerr != nil {
			nr.err = fmt.Errorf("%w; rollback: %w", nr.err, rerr)
		} else {
			nr.RolledBack = true
			nr.err = fmt.Errorf("%w; rolled back to generation %d", nr.err, back.Number)
		}
		nr.Error = nr.err.Error()
		r.recordFailure(node, plan, np, back, nr.Error, log)
		return *nr
	}

	st.Progress(ctx, 3, steps, "arm the dead-man rollback, set the boot default")
	actx, cancel := context.WithTimeout(node, r.Config.ActivationTimeout)
	gen, act, err := ms.ArmBoot(actx, id.timer, r.Config.ConfirmTimeout, back, Generation{Number: np.TargetGeneration, Toplevel: np.Target}, id.unit)
	cancel()
	nr.Generation, nr.ExitCode = gen, act.ExitCode
	writeLines(st, act.Output)
	switch {
	case isNotArmed(err):
		return fail("arm the dead-man rollback", err)
	case err != nil:
		return rollBack("set the boot default", err)
	}

	st.Progress(ctx, 4, steps, "restart the container (pct reboot)")
	rctx, cancel := context.WithTimeout(node, r.Config.ActivationTimeout)
	rebootStart := r.now()
	rebooted = true // from here on, whatever pct did, the rollback restarts the container
	err = rb.RebootContainer(rctx, vmid, np.Node, ms)
	cancel()
	nr.Activation = r.now().Sub(rebootStart)
	if err != nil {
		return rollBack("restart the container", err)
	}
	// The restart emptied /run: the first timer is gone. Arm one again, for the gate.
	actx, cancel = context.WithTimeout(node, r.Config.ActivationTimeout)
	_, err = ms.Arm(actx, id.timer+"-booted", r.Config.ConfirmTimeout, back, Generation{Number: gen, Toplevel: np.Target})
	cancel()
	if err != nil {
		return rollBack("arm the dead-man rollback after the restart", err)
	}
	log.Info("container restarted into the new boot default", "vmid", vmid, "generation", gen, "took", nr.Activation.Round(time.Millisecond))

	st.Progress(ctx, 5, steps, "health gate")
	gateStart := r.now()
	err = r.gate(node, np.Node, np.Target, peers)
	nr.Rejoin = r.now().Sub(gateStart)
	if err != nil {
		return rollBack("health gate", err)
	}
	st.Progress(ctx, 6, steps, "disarm")
	if err := r.disarm(node, ms, id.timer+"-booted"); err != nil {
		return rollBack("disarm the dead-man rollback", err)
	}
	nr.Status = StatusSuccess
	if err := r.recordAt(node, plan, np, gen, log); err != nil {
		nr.Status, nr.err = StatusFailed, fmt.Errorf("booted and healthy, but not recorded: %w", err)
		nr.Error = nr.err.Error()
	}
	log.Info("node booted into its target", "generation", gen, "rejoin", nr.Rejoin.Round(time.Millisecond))
	return *nr
}

// rollBackBoot returns a node whose boot failed to generation back: switch the profile back, run its
// `switch-to-configuration boot`, delete the failed generation bad (0: none); when the container was
// restarted (or may have been), restart it again into back; gate; then claim the dead-man timers.
func (r *Rollout) rollBackBoot(ctx context.Context, ms ModeSystem, rb remote.Rebooter, vmid int, id ids, back Generation, bad int,
	rebooted bool, peers int, log *slog.Logger) error {
	bounded := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, r.Config.ActivationTimeout)
	}
	backstop := fmt.Sprintf("its dead-man timer switches it back at the confirm timeout (%s) unless it fired already", r.Config.ConfirmTimeout)
	sctx, cancel := bounded()
	err := ms.SwitchGeneration(sctx, back.Number)
	cancel()
	if err != nil {
		return fmt.Errorf("switch the profile back to generation %d: %w; %s", back.Number, err, backstop)
	}
	actx, cancel := bounded()
	_, err = ms.ActivateAction(actx, id.rollback, back.Toplevel, ModeBoot)
	cancel()
	if err != nil {
		return fmt.Errorf("set generation %d as the boot default: %w; %s", back.Number, err, backstop)
	}
	if bad != 0 && bad != back.Number {
		xctx, cancel := bounded()
		if err := ms.DeleteGenerations(xctx, bad); err != nil {
			log.Warn("cannot delete the failed generation", "generation", bad, "err", err)
		}
		cancel()
	}
	if !rebooted {
		cctx, cancel := bounded()
		cur, cerr := ms.Current(cctx)
		cancel()
		rebooted = cerr != nil || cur != back.Toplevel
	}
	if rebooted {
		rctx, cancel := bounded()
		err := rb.RebootContainer(rctx, vmid, ms.Name(), ms)
		cancel()
		if err != nil {
			return fmt.Errorf("restart the container into generation %d: %w", back.Number, err)
		}
	}
	gateErr := r.gate(ctx, ms.Name(), back.Toplevel, peers)
	for _, t := range []string{id.timer, id.timer + "-booted"} {
		dctx, cancel := bounded()
		if _, err := ms.Disarm(dctx, t); err != nil {
			log.Warn("cannot disarm the dead-man timer after the rollback", "timer", t, "err", err)
		}
		cancel()
	}
	if gateErr != nil {
		return fmt.Errorf("back on generation %d, but %w", back.Number, gateErr)
	}
	log.Info("rolled back", "generation", back.Number)
	return nil
}
