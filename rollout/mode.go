package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Mode is how a switch activates a node's target: the three actions of NixOS' switch-to-configuration
// that a rollout uses.
type Mode string

// The modes.
const (
	// ModeSwitch makes the target the boot default (a generation of the system profile) and activates
	// it live: `switch-to-configuration switch`. The default.
	ModeSwitch Mode = "switch"
	// ModeTest activates the target live without making it the boot default: the profile is not set
	// (no new generation), `switch-to-configuration test`. A revert activates the system the node ran
	// before again, with `test` too. The canary of one node: a later switch, or a restart, ends it.
	ModeTest Mode = "test"
	// ModeBoot makes the target the boot default (`switch-to-configuration boot`, which activates
	// nothing) and restarts the node's container through Proxmox (pct reboot). A rollback sets the
	// profile back, runs the previous generation's `boot` and restarts the container again.
	ModeBoot Mode = "boot"
)

// ParseMode reads a mode; "" is ModeSwitch.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return ModeSwitch, nil
	case ModeSwitch, ModeTest, ModeBoot:
		return m, nil
	}
	return "", fmt.Errorf("activation mode %q: want switch, test or boot", s)
}

// orSwitch is m, or ModeSwitch for "".
func (m Mode) orSwitch() Mode {
	if m == "" {
		return ModeSwitch
	}
	return m
}

// TestActivation is a node's test activation (ModeTest): it runs Toplevel, built from Commit, which
// is no generation of its profile; the NodeState's other fields keep describing the boot default.
type TestActivation struct {
	Toplevel string    `json:"toplevel"`
	Commit   string    `json:"commit,omitempty"`
	RunID    string    `json:"run_id"`
	Since    time.Time `json:"since"`
}

// runsTest reports whether an observed node runs the test activation its record holds.
func runsTest(o Observation) bool {
	return o.Current != "" && o.Record.Test != nil && o.Record.Test.Toplevel == o.Current
}

// ModeSystem is a System that activates in the test and boot modes too and reads switch inhibitors;
// SSHSystem is one, so is rollouttest.System.
type ModeSystem interface {
	System
	// ArmTest starts the dead-man timer id: after d, unless Disarm claimed it first, the node
	// activates back with `switch-to-configuration test` (its profile untouched). Then, in the same
	// round trip, it activates to with `switch-to-configuration test` in unit. The profile is never
	// set. An error wrapping ErrNotArmed changed nothing on the node.
	ArmTest(ctx context.Context, id string, d time.Duration, back, to, unit string) (Activation, error)
	// ArmBoot is ArmActivate with `switch-to-configuration boot` (the boot default set, nothing
	// activated): its dead-man timer switches the profile back to back, runs back's `boot` and
	// deletes the generation that was current.
	ArmBoot(ctx context.Context, id string, d time.Duration, back, to Generation, unit string) (int, Activation, error)
	// ActivateAction is Activate with another action of switch-to-configuration (test, boot).
	ActivateAction(ctx context.Context, unit, toplevel string, action Mode) (Activation, error)
	// SwitchInhibitors reads the switch-inhibitors file of each toplevel on the node (nixpkgs'
	// system.switch.inhibitors, see DiffInhibitors).
	SwitchInhibitors(ctx context.Context, toplevels ...string) ([]Inhibitors, error)
}

// Inhibitors are a system's switch inhibitors: nixpkgs' system.switch.inhibitors, an attribute set of
// strings, written as JSON to <toplevel>/switch-inhibitors
// (nixos/modules/system/activation/switchable-system.nix: build.inhibitSwitch = writers.writeJSON).
type Inhibitors struct {
	// Present: the toplevel is on the node (false: not copied yet; Values then means nothing).
	Present bool
	// Values are the inhibitors; empty when the system has no file, or one that is no JSON object
	// of strings (the check's `try fromjson catch {}`).
	Values map[string]string
}

// InhibitorChange is a switch inhibitor whose value differs between the running system and a target.
type InhibitorChange struct {
	Name string `json:"name"`
	From string `json:"from"`
	To   string `json:"to"`
}

// String is the line nixpkgs' check prints for it: `name : from -> to`.
func (c InhibitorChange) String() string { return c.Name + " : " + c.From + " -> " + c.To }

// DiffInhibitors is what switch-to-configuration's pre-switch check switchInhibitors compares
// (switchable-system.nix, preSwitchChecks.switchInhibitors): the inhibitors of the running system
// (/run/current-system) that the target has too, with another value; an inhibitor only one side has
// changes nothing. Any such change makes `switch-to-configuration switch` and `test` refuse with
// "There are changes to critical components of the system" and exit 1 ("Pre-switch checks failed"),
// unless NIXOS_NO_CHECK=1; `boot` is not checked. Sorted by name, as jq walks the JSON object.
func DiffInhibitors(running, target map[string]string) []InhibitorChange {
	var out []InhibitorChange
	for k, v := range running {
		if nv, ok := target[k]; ok && nv != v {
			out = append(out, InhibitorChange{Name: k, From: v, To: nv})
		}
	}
	slices.SortFunc(out, func(a, b InhibitorChange) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// parseInhibitors reads a switch-inhibitors file as the check does: anything but a JSON object of
// strings is no inhibitor at all.
func parseInhibitors(raw []byte) map[string]string {
	var m map[string]string
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m
}

// maxInhibitorsFile bounds the switch-inhibitors file read from a node or the local store.
const maxInhibitorsFile = 64 << 10

// localInhibitors reads toplevel's switch inhibitors from the local Nix store (the controller built
// the target): ok false when the toplevel is not there either.
func localInhibitors(toplevel string) (map[string]string, bool) {
	if _, err := os.Stat(toplevel); err != nil {
		return nil, false
	}
	f, err := os.Open(filepath.Join(toplevel, "switch-inhibitors"))
	if err != nil {
		return nil, true // no file: no inhibitors
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxInhibitorsFile))
	if err != nil {
		return nil, true
	}
	return parseInhibitors(raw), true
}

// observeInhibitors fills in.Inhibitors for every target that a live switch would activate (mode
// switch or test) on a reachable node running something else: the inhibitor changes from the running
// system to the target, read on the node (and, for a target not copied yet, from the local store).
// A node whose inhibitors cannot be read gets none: its switch-to-configuration still checks.
func (r *Rollout) observeInhibitors(ctx context.Context, in *PlanInput) {
	if in.Mode.orSwitch() == ModeBoot {
		return
	}
	obs := map[string]Observation{}
	for _, o := range in.Observed {
		obs[o.Node] = o
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, t := range in.Targets {
		o, ok := obs[t.Node]
		ms, isMode := r.Systems[t.Node].(ModeSystem)
		if !ok || !isMode || !o.Reachable || o.Current == "" || t.Toplevel == "" || o.Current == t.Toplevel {
			continue
		}
		wg.Go(func() {
			ictx, cancel := context.WithTimeout(ctx, r.Config.PreflightTimeout)
			defer cancel()
			got, err := ms.SwitchInhibitors(ictx, o.Current, t.Toplevel)
			if err != nil || len(got) != 2 {
				r.logger().Warn("cannot read the switch inhibitors", "node", t.Node, "err", err)
				return
			}
			target := got[1]
			if !target.Present {
				target.Values, target.Present = localInhibitors(t.Toplevel)
			}
			if !got[0].Present || !target.Present {
				return
			}
			if d := DiffInhibitors(got[0].Values, target.Values); len(d) > 0 {
				mu.Lock()
				if in.Inhibitors == nil {
					in.Inhibitors = map[string][]InhibitorChange{}
				}
				in.Inhibitors[t.Node] = d
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// modePlan decides how a node's switch activates (NewPlan calls it for every target):
//   - the mode asked for; a node at the target already is skipped in every mode, but for a switch a
//     node running the target as a test activation is switched (its profile does not hold it yet);
//   - a live switch across changed switch inhibitors becomes a boot and restart (as nixpkgs'
//     check advises), and a test activation across them is refused (it has no such way out);
//   - a node running a test activation (its record says so) is no node switched by hand: a switch
//     rolls it back to its boot default, a test activation to the test activation it ran.
func modePlan(np NodePlan, o Observation, in PlanInput) NodePlan {
	mode := in.Mode.orSwitch()
	if runsTest(o) {
		np.Testing = true
		np.CurrentCommit = o.Record.Test.Commit
	}
	if np.Action == ActionSkip && mode == ModeSwitch && np.Testing {
		np.Action, np.Reason = ActionSwitch, "runs the target as a test activation: make it the boot default"
	}
	if np.Action != ActionSwitch {
		return np
	}
	if mode != ModeSwitch {
		np.Mode = mode // "" is switch
	}
	changes := in.Inhibitors[np.Node]
	switch {
	case mode == ModeSwitch && len(changes) > 0:
		np.Mode, np.Inhibitors = ModeBoot, changes
		np.Reason = joinReason(np.Reason, "switch inhibitors changed ("+inhibitorList(changes)+"): boot and restart the container instead of a live switch")
	case mode == ModeTest && len(changes) > 0:
		np.Action, np.Inhibitors = ActionRefuse, changes
		np.Reason = "--mode test cannot activate across changed switch inhibitors (" + inhibitorList(changes) + "): use --mode boot"
		return np
	case mode == ModeTest:
		np.Reason = joinReason(np.Reason, "test activation: the boot default stays generation "+fmt.Sprint(np.CurrentGeneration))
	case mode == ModeBoot:
		np.Reason = joinReason(np.Reason, "boot: set the boot default, restart the container")
	}
	if np.Mode == ModeBoot && in.RebootProblem != "" {
		np.Action, np.Reason = ActionRefuse, np.Reason+"; but "+in.RebootProblem
	}
	return np
}

func inhibitorList(changes []InhibitorChange) string {
	s := make([]string, len(changes))
	for i, c := range changes {
		s[i] = c.String()
	}
	return strings.Join(s, "; ")
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// switchBack is the generation a failed switch goes back to: the newest generation holding the
// running system, or, when the node runs a test activation (no generation holds it), the boot
// default.
func switchBack(np NodePlan, cur string, gens []Generation) Generation {
	back := runningGeneration(Observation{Current: cur, Generations: gens})
	if back.Number == 0 && np.Testing {
		back = CurrentGeneration(gens)
	}
	return back
}

// switchMode runs np's switch in its mode: switchNode for ModeSwitch, else switchTest or switchBoot.
func (r *Rollout) switchMode(ctx context.Context, plan *Plan, np NodePlan, id ids, peers int, st Step, log *slog.Logger) (NodeResult, bool) {
	switch np.Mode {
	case ModeTest:
		return r.switchTest(ctx, plan, np, id, peers, st, log.With("mode", ModeTest)), true
	case ModeBoot:
		return r.switchBoot(ctx, plan, np, id, peers, st, log.With("mode", ModeBoot)), true
	}
	return NodeResult{}, false
}

// modeStart is the beginning every mode shares (prepare): guard and copy, then the secrets. It
// returns the running system and generations, or the failed result.
func (r *Rollout) modeStart(ctx context.Context, np NodePlan, nr *NodeResult, st Step, steps int, fail func(string, error) NodeResult) (string, []Generation, *NodeResult) {
	rs, what, err := r.prepare(ctx, np, nr, st, steps, nil)
	if err != nil {
		f := fail(what, err)
		return "", nil, &f
	}
	return rs.current, rs.generations, nil
}

// prepare is what comes before a node's activation in every mode. The guard: the node still runs what
// the plan saw (the plan may be minutes old), and check (nil: none) accepts it. Beside the guard, the
// closure's copy: a copy changes nothing the node runs, so it need not wait for the guard (until it is
// done the run's cancellation may stop it; a failed guard stops it). Then, once both are done, the
// secrets: the files the new system reads outside the Nix store; the running system reads them only
// when it restarts or reloads, so installing them before the switch is safe. On failure it returns the
// step that failed and why; nr gets what was copied.
func (r *Rollout) prepare(ctx context.Context, np NodePlan, nr *NodeResult, st Step, steps int, check func(runningState) error) (runningState, string, error) {
	st.Progress(ctx, 1, steps, "guard, copy closure")
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	copied := make(chan closureCopy, 1) // buffered: the copier never blocks on a guard that failed
	go func() { copied <- r.copyClosure(cctx, np) }()
	rs, what, err := r.guardRunning(ctx, np)
	if err == nil && check != nil {
		what, err = "guard", check(rs)
	}
	if err != nil {
		cancel()
		<-copied
		return rs, what, err
	}
	c := <-copied
	nr.Copied, nr.CopiedFrom, nr.Copy = c.paths, c.from, c.took
	if c.err != nil {
		return rs, "copy closure", c.err
	}
	if r.Secrets != nil {
		st.Progress(ctx, 2, steps, "install secrets")
		if err := r.Secrets.Install(ctx, np.Node, r.Systems[np.Node]); err != nil {
			return rs, "install secrets", err
		}
	}
	return rs, "", nil
}

// guardRunning reads what the node runs and checks that it still runs what the plan saw. On failure
// it returns the step that failed and why.
func (r *Rollout) guardRunning(ctx context.Context, np NodePlan) (runningState, string, error) {
	rs := readRunning(ctx, r.Systems[np.Node])
	switch {
	case rs.currentErr != nil:
		return rs, "read the running system", rs.currentErr
	case rs.generationsErr != nil:
		return rs, "list generations", rs.generationsErr
	case rs.current != np.Current:
		return rs, "guard", fmt.Errorf("the node changed since the plan: it ran %s, now %s", np.Current, rs.current)
	}
	return rs, "", nil
}

// closureCopy is how a node's closure got there: the paths copied, how long it took, why it failed.
type closureCopy struct {
	paths int
	from  string
	took  time.Duration
	err   error
}

// copyClosure puts the target's closure on the node: the pre-copy's, when it succeeded, else copied
// now; none for an existing generation.
func (r *Rollout) copyClosure(ctx context.Context, np NodePlan) closureCopy {
	if np.precopy != nil {
		select {
		case c := <-np.precopy:
			if c.err == nil {
				return closureCopy{paths: len(c.copied.Missing), from: c.copied.From, took: c.copied.Duration}
			}
		case <-ctx.Done():
			return closureCopy{err: context.Cause(ctx)}
		}
	}
	if np.TargetGeneration != 0 {
		return closureCopy{}
	}
	cctx, cancel := context.WithTimeout(ctx, r.Config.CopyTimeout)
	defer cancel()
	c, err := r.Systems[np.Node].Copy(cctx, np.Target)
	return closureCopy{paths: len(c.Missing), took: c.Duration, err: err}
}

// modeResult starts a NodeResult of np and the func that fails it.
func (r *Rollout) modeResult(np NodePlan, log *slog.Logger) (*NodeResult, func(string, error) NodeResult) {
	nr := &NodeResult{Node: np.Node, Action: ActionSwitch, Mode: np.Mode, From: np.Current, FromGeneration: np.CurrentGeneration, To: np.Target}
	return nr, func(what string, err error) NodeResult {
		nr.Status, nr.err = StatusFailed, fmt.Errorf("%s: %w", what, err)
		nr.Error = nr.err.Error()
		log.Error("switch failed", "step", what, "err", err)
		return *nr
	}
}

// switchTest is a test activation: guard, copy, arm the dead-man timer (which activates the running
// system again) and activate the target with `switch-to-configuration test` in one round trip, gate,
// disarm, record the test activation. The profile is never touched. A failure from the activation
// on activates the system the node ran again (revertTest).
func (r *Rollout) switchTest(ctx context.Context, plan *Plan, np NodePlan, id ids, peers int, st Step, log *slog.Logger) (res NodeResult) {
	const steps = 5
	start := r.now()
	nr, fail := r.modeResult(np, log)
	defer func() { res.Duration = r.now().Sub(start) }() // on the copy returned
	ms, ok := r.Systems[np.Node].(ModeSystem)
	if !ok {
		return fail("test activation", fmt.Errorf("the node's connection cannot activate in mode %s", ModeTest))
	}
	cur, gens, failed := r.modeStart(ctx, np, nr, st, steps, fail)
	if failed != nil {
		return *failed
	}
	back := Generation{Number: runningGeneration(Observation{Current: cur, Generations: gens}).Number, Toplevel: cur}
	node := context.WithoutCancel(ctx)
	revert := func(what string, cause error) NodeResult {
		fail(what, cause)
		if rerr := r.revertTest(node, ms, id, cur, peers, log); rerr != nil {
			nr.err = fmt.Errorf("%w; revert: %w", nr.err, rerr)
		} else {
			nr.RolledBack = true
			nr.err = fmt.Errorf("%w; reverted: it runs %s again", nr.err, short(cur))
		}
		nr.Error = nr.err.Error()
		r.recordFailure(node, plan, np, back, nr.Error, log)
		return *nr
	}

	st.Progress(ctx, 3, steps, "arm the dead-man revert, activate (test)")
	actx, cancel := context.WithTimeout(node, r.Config.ActivationTimeout)
	act, err := ms.ArmTest(actx, id.timer, r.Config.ConfirmTimeout, cur, np.Target, id.unit)
	cancel()
	nr.Activation, nr.ExitCode, nr.Reconnected = act.Duration, act.ExitCode, act.Reconnected
	writeLines(st, act.Output)
	switch {
	case isNotArmed(err):
		return fail("arm the dead-man revert", err)
	case err != nil:
		return revert("activate (test)", err)
	}
	nr.Generation = CurrentGeneration(gens).Number

	st.Progress(ctx, 4, steps, "health gate")
	gateStart := r.now()
	err = r.gate(node, np.Node, np.Target, peers)
	nr.Rejoin = r.now().Sub(gateStart)
	if err != nil {
		return revert("health gate", err)
	}
	st.Progress(ctx, 5, steps, "disarm")
	if err := r.disarm(node, ms, id.timer); err != nil {
		return revert("disarm the dead-man revert", err)
	}
	nr.Status = StatusSuccess
	if err := r.recordTest(node, plan, np, CurrentGeneration(gens), log); err != nil {
		nr.Status, nr.err = StatusFailed, fmt.Errorf("test activation healthy, but not recorded: %w", err)
		nr.Error = nr.err.Error()
	}
	log.Info("node runs a test activation", "boot_default", nr.Generation, "activation", nr.Activation.Round(time.Millisecond),
		"rejoin", nr.Rejoin.Round(time.Millisecond))
	return *nr
}

// revertTest activates back again with `switch-to-configuration test` (unless the node runs it
// already), gates it, and only then claims the dead-man timer, the backstop until then.
func (r *Rollout) revertTest(ctx context.Context, ms ModeSystem, id ids, back string, peers int, log *slog.Logger) error {
	bctx, cancel := context.WithTimeout(ctx, r.Config.ActivationTimeout)
	cur, err := ms.Current(bctx)
	cancel()
	if err != nil || cur != back {
		actx, cancel := context.WithTimeout(ctx, r.Config.ActivationTimeout)
		_, err = ms.ActivateAction(actx, id.rollback, back, ModeTest)
		cancel()
		if err != nil {
			return fmt.Errorf("activate %s again: %w; its dead-man timer does at the confirm timeout (%s) unless it fired already",
				short(back), err, r.Config.ConfirmTimeout)
		}
	}
	gateErr := r.gate(ctx, ms.Name(), back, peers)
	if err := r.disarm(ctx, ms, id.timer); err != nil {
		log.Warn("the dead-man timer after the revert", "err", err)
	}
	if gateErr != nil {
		return fmt.Errorf("runs %s again, but %w", short(back), gateErr)
	}
	log.Info("test activation reverted", "runs", back)
	return nil
}

// disarm claims dead-man timer id: an error when it fired first.
func (r *Rollout) disarm(ctx context.Context, sys System, id string) error {
	dctx, cancel := context.WithTimeout(ctx, r.Config.ActivationTimeout)
	claimed, err := sys.Disarm(dctx, id)
	cancel()
	switch {
	case err != nil:
		return err
	case !claimed:
		return fmt.Errorf("the timer fired before the switch was confirmed (CIMDEPLOY_ROLLOUT_CONFIRM_TIMEOUT %s): the node went back by itself",
			r.Config.ConfirmTimeout)
	}
	return nil
}

// recordTest records that the node runs np's target as a test activation; the rest of its record
// (the boot default) stays, and a node never recorded gets its boot default def recorded too. A test
// activation of the boot default itself (a revert) records none.
func (r *Rollout) recordTest(ctx context.Context, plan *Plan, np NodePlan, def Generation, log *slog.Logger) error {
	return r.update(ctx, np.Node, log, func(st *NodeState) bool {
		if st.Toplevel == "" {
			st.Toplevel, st.Generation, st.Commit, st.RunID, st.Deployed = def.Toplevel, def.Number, def.Revision, plan.RunID, r.now().UTC()
		}
		st.Test = &TestActivation{Toplevel: np.Target, Commit: np.TargetCommit, RunID: plan.RunID, Since: r.now().UTC()}
		if np.Target == st.Toplevel { // back on its boot default (a revert): no test activation any more
			st.Test = nil
		}
		st.FailedCommit, st.FailedToplevel, st.FailedAt, st.FailedRunID, st.FailedReason = "", "", time.Time{}, "", ""
		return true
	})
}
