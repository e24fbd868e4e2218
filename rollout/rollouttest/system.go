// Package rollouttest holds in-memory fakes of rollout.System and rollout.Cluster for tests: real
// implementations with knobs (an activation that exits with a code, takes time or loses its
// connection, a system whose nats-server never gets healthy, a node that is down). It is for tests
// only: never import it from code that ships. The rollout's contract suite runs against these fakes
// and against the lab, so they behave like a NixOS node over SSH and a NATS cluster.
package rollouttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/remote/remotetest"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// System is a fake NixOS node: a system profile with generations, /run/current-system, dead-man
// timers that really fire, and activations with knobs. Commands and reachability are those of its
// remotetest.Node (SetUp(false) makes it refuse connections, as a stopped container does). Safe for
// concurrent use.
type System struct {
	*remotetest.Node

	mu          sync.Mutex
	current     string
	gens        []rollout.Generation
	next        int
	timers      map[string]*time.Timer
	claimed     map[string]bool
	revisions   map[string]string // toplevel -> configuration revision
	nextExit    []int
	delay       time.Duration
	rejoin      time.Duration // after an activation, the node's server is not healthy this long
	rejoinedAt  time.Time
	dropNext    bool
	probeErr    error
	activations []string
	log         []string
	now         func() time.Time
	inhibitors  map[string]map[string]string // toplevel -> its switch inhibitors (mode.go)
}

var _ rollout.System = (*System)(nil)

// NewSystem is a reachable node called name that runs toplevel as generation 1.
func NewSystem(name, toplevel string) *System {
	s := &System{Node: remotetest.NewNode(name, LocalStore{}), timers: map[string]*time.Timer{}, claimed: map[string]bool{},
		revisions: map[string]string{}, now: time.Now}
	if toplevel != "" {
		s.current = toplevel
		s.next = 1
		s.gens = []rollout.Generation{{Number: 1, Toplevel: toplevel, Current: true, Date: s.now().UTC()}}
	}
	return s
}

// Toplevel is a store path for a fake system called name.
func Toplevel(name string) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	h := uint64(14695981039346656037)
	for _, c := range []byte(name) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	var b strings.Builder
	for range 32 {
		b.WriteByte(alphabet[h%32])
		h = h*6364136223846793005 + 1442695040888963407
	}
	return "/nix/store/" + b.String() + "-nixos-system-" + name
}

// SetRevision makes toplevel's system name revision as its configuration revision.
func (s *System) SetRevision(toplevel, revision string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revisions[toplevel] = revision
}

// FailNextActivation makes the next activation exit with code: 1 changes nothing (a bad action or
// bootloader fails before the activation); 2, 3, 4 and 100 leave the new system active, as
// switch-to-configuration-ng does (exit 2: the activation script failed, after it had pointed
// /run/current-system at the new system).
func (s *System) FailNextActivation(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextExit = append(s.nextExit, code)
}

// SlowActivations makes every activation take d.
func (s *System) SlowActivations(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SlowRejoins makes the node's NATS server unhealthy for d after each activation (a restart that
// catches up), as Cluster's health checks see it.
func (s *System) SlowRejoins(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejoin = d
}

// Rejoined reports whether the node's server is past the rejoin time of its last activation.
func (s *System) Rejoined() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.now().Before(s.rejoinedAt)
}

// DropNextActivation loses the connection of the next activation while it runs; the activation
// completes on the node all the same.
func (s *System) DropNextActivation() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropNext = true
}

// FailProbes makes every new connection fail with err (nil: they work again).
func (s *System) FailProbes(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.probeErr = err
}

// Running is the system /run/current-system points at, seen from inside the node.
func (s *System) Running() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// Activations are the units activations ran in, in order.
func (s *System) Activations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.activations...)
}

// Log is what happened on the node, one line per step, in order.
func (s *System) Log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// SwitchByHand activates toplevel behind the rollout's back, as an admin's nixos-rebuild switch.
func (s *System) SwitchByHand(toplevel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setProfileLocked(toplevel)
	s.current = toplevel
	s.logf("switch by hand to %s", toplevel)
}

func (s *System) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf(format, args...))
}

// refused is the error of a node that is down.
func (s *System) refused(step string) error {
	return s.Node.Run(context.Background(), remote.Cmd{Argv: []string{"true"}, Step: step})
}

func (s *System) check(ctx context.Context, step string) error {
	if !s.Up() {
		return s.refused(step)
	}
	if err := ctx.Err(); err != nil {
		return &remote.Error{Host: s.Name(), Step: step, Err: err}
	}
	return nil
}

// Current implements rollout.System.
func (s *System) Current(ctx context.Context) (string, error) {
	if err := s.check(ctx, "read /run/current-system"); err != nil {
		return "", err
	}
	return s.Running(), nil
}

// Generations implements rollout.System.
func (s *System) Generations(ctx context.Context) ([]rollout.Generation, error) {
	if err := s.check(ctx, "list generations"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]rollout.Generation, len(s.gens))
	for i, g := range s.gens {
		g.Revision = s.revisions[g.Toplevel]
		out[i] = g
	}
	return out, nil
}

// Copy implements rollout.System through the node's CopyClosure.
func (s *System) Copy(ctx context.Context, toplevel string) (remote.Copied, error) {
	return s.CopyClosure(ctx, []string{toplevel})
}

func (s *System) setProfileLocked(toplevel string) int {
	s.next++
	for i := range s.gens {
		s.gens[i].Current = false
	}
	s.gens = append(s.gens, rollout.Generation{Number: s.next, Toplevel: toplevel, Current: true, Date: s.now().UTC()})
	return s.next
}

// SwitchGeneration implements rollout.System.
func (s *System) SwitchGeneration(ctx context.Context, gen int) error {
	if err := s.check(ctx, "switch generation"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.switchLocked(gen)
}

func (s *System) switchLocked(gen int) error {
	if _, ok := rollout.FindGeneration(s.gens, gen); !ok {
		return &remote.Error{Host: s.Name(), Step: "switch generation", Err: &remote.ExitError{Code: 1,
			Stderr: fmt.Sprintf("error: generation %d does not exist", gen)}}
	}
	for i := range s.gens {
		s.gens[i].Current = s.gens[i].Number == gen
	}
	s.logf("switch profile to generation %d", gen)
	return nil
}

// DeleteGenerations implements rollout.System.
func (s *System) DeleteGenerations(ctx context.Context, gens ...int) error {
	if err := s.check(ctx, "delete generations"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteLocked(gens...)
	return nil
}

func (s *System) deleteLocked(gens ...int) {
	kept := s.gens[:0]
	for _, g := range s.gens {
		del := false
		for _, n := range gens {
			del = del || (g.Number == n && !g.Current)
		}
		if del {
			s.logf("delete generation %d", g.Number)
		} else {
			kept = append(kept, g)
		}
	}
	s.gens = kept
}

// Arm implements rollout.System: the timer really fires after d; then the profile is set.
func (s *System) Arm(ctx context.Context, id string, d time.Duration, back, to rollout.Generation) (int, error) {
	if err := s.check(ctx, "arm"); err != nil {
		return 0, fmt.Errorf("%w: %w", rollout.ErrNotArmed, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.timers[id]; ok {
		return 0, fmt.Errorf("%w: %w", rollout.ErrNotArmed, &remote.Error{Host: s.Name(), Step: "arm", Err: &remote.ExitError{Code: 1,
			Stderr: "Failed to start transient timer unit: Unit cimdeploy-rollback-" + id + ".timer was already loaded"}})
	}
	s.logf("arm %s for %s back to generation %d", id, d, back.Number)
	s.timers[id] = time.AfterFunc(d, func() { s.fire(id, back) })
	if to.Number != 0 {
		if err := s.switchLocked(to.Number); err != nil {
			return 0, err
		}
		s.logf("set profile to generation %d", to.Number)
		return to.Number, nil
	}
	if len(s.Has(to.Toplevel)) == 0 {
		return 0, &remote.Error{Host: s.Name(), Step: "set the system profile", Err: &remote.ExitError{Code: 1,
			Stderr: fmt.Sprintf("error: path '%s' is not valid", to.Toplevel)}}
	}
	n := s.setProfileLocked(to.Toplevel)
	s.logf("set profile to generation %d", n)
	return n, nil
}

// ArmActivate implements rollout.System: Arm, then, once the profile is set, Activate.
func (s *System) ArmActivate(ctx context.Context, id string, d time.Duration, back, to rollout.Generation, unit string) (int, rollout.Activation, error) {
	start := time.Now()
	if to.Toplevel == "" {
		return 0, rollout.Activation{Unit: unit}, fmt.Errorf("arm rollback %s: %w: no system to activate", id, rollout.ErrNotArmed)
	}
	gen, err := s.Arm(ctx, id, d, back, to)
	if err != nil {
		return gen, rollout.Activation{Unit: unit, Duration: time.Since(start)}, err
	}
	act, err := s.Activate(ctx, unit, to.Toplevel)
	act.Duration = time.Since(start)
	return gen, act, err
}

// fire is the dead-man timer's rollback on the node.
func (s *System) fire(id string, back rollout.Generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claimed[id] {
		return
	}
	s.claimed[id] = true
	bad := rollout.CurrentGeneration(s.gens).Number
	s.logf("timer %s fired", id)
	if s.switchLocked(back.Number) != nil {
		return
	}
	s.current = back.Toplevel
	if bad != back.Number {
		s.deleteLocked(bad)
	}
}

// Disarm implements rollout.System.
func (s *System) Disarm(ctx context.Context, id string) (bool, error) {
	if err := s.check(ctx, "disarm"); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.timers[id]; ok {
		t.Stop()
	}
	if s.claimed[id] {
		return false, nil
	}
	s.claimed[id] = true
	s.logf("disarm %s", id)
	return true, nil
}

// Activate implements rollout.System with the knobs: activateAs with the action switch (mode.go).
func (s *System) Activate(ctx context.Context, unit, toplevel string) (rollout.Activation, error) {
	return s.activateAs(ctx, unit, toplevel, rollout.ModeSwitch)
}

// Probe implements rollout.System.
func (s *System) Probe(ctx context.Context) (string, error) {
	if err := s.check(ctx, "probe"); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.probeErr != nil {
		return "", &remote.Error{Host: s.Name(), Step: "connect", Err: s.probeErr}
	}
	return s.current, nil
}

// Timers are the ids of timers armed and neither fired nor disarmed.
func (s *System) Timers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.timers {
		if !s.claimed[id] {
			ids = append(ids, id)
		}
	}
	return ids
}

// Close stops every pending timer (end of a test).
func (s *System) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.timers {
		t.Stop()
	}
}

// LocalStore is a local Nix store where every store path exists and is its own closure.
type LocalStore struct{}

// Closure implements remote.LocalStore.
func (LocalStore) Closure(_ context.Context, paths []string) ([]string, error) { return paths, nil }

// Export implements remote.LocalStore.
func (LocalStore) Export(_ context.Context, paths []string, w io.Writer) error {
	for _, p := range paths {
		if _, err := io.WriteString(w, p+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// ErrUnreachable is the probe failure of FailProbes' callers that need one.
var ErrUnreachable = errors.New("i/o timeout")
