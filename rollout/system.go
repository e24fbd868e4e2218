package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
)

// SystemProfile is the NixOS system profile every generation belongs to.
const SystemProfile = "/nix/var/nix/profiles/system"

// System is the node side of a rolling switch: one NixOS node and the steps the rollout takes on
// it. SSHSystem implements it over package remote; package rollouttest has a fake with knobs, and one
// contract suite runs against both. Methods are safe for concurrent use, but the rollout calls them
// for one node at a time.
type System interface {
	// Name is the node's name; Run runs a command on it (the container's SSH, which provisioning
	// waits for).
	Name() string
	remote.Runner
	// Current is the system /run/current-system points at ("" when none).
	Current(ctx context.Context) (string, error)
	// Generations lists the system profile's generations, oldest first, with the current one
	// marked and each one's configuration revision (the commit, when the system names it).
	Generations(ctx context.Context) ([]Generation, error)
	// Copy copies toplevel's closure into the node's store: only the paths it lacks.
	Copy(ctx context.Context, toplevel string) (remote.Copied, error)
	// SwitchGeneration makes generation gen the profile's current one (nix-env --switch-generation).
	SwitchGeneration(ctx context.Context, gen int) error
	// DeleteGenerations deletes the generations gens that exist and are not current.
	DeleteGenerations(ctx context.Context, gens ...int) error
	// Arm starts the dead-man timer id on the node: after d, unless Disarm claimed it first, the
	// node switches its profile back to generation back, activates it and deletes the generation
	// that was current when the timer fired (if another). It needs no controller to do so. Then, in
	// the same round trip, Arm makes to the profile's current generation: a new generation of
	// to.Toplevel when to.Number is 0 (nix-env --set), else the existing generation to.Number
	// (--switch-generation). It activates nothing and returns the generation now current. An error
	// that wraps ErrNotArmed changed nothing on the node; after any other error the timer may run.
	Arm(ctx context.Context, id string, d time.Duration, back, to Generation) (int, error)
	// ArmActivate is Arm, then Activate of to.Toplevel in unit (to.Toplevel is required, also with
	// to.Number), in one round trip to the node where the implementation can (SSHSystem: one command). The unit starts only once the timer runs and
	// the profile is set. It returns the generation now current: 0 when the profile was not set, or
	// it is not known whether it was; then the error is Arm's (ErrNotArmed: nothing changed). With a
	// generation, the error and the Activation are Activate's (its Duration counts from the start of
	// the whole call).
	ArmActivate(ctx context.Context, id string, d time.Duration, back, to Generation, unit string) (int, Activation, error)
	// Disarm stops timer id and claims it: true when its rollback will never run, false when it
	// fired first (the node is rolling, or has rolled, itself back). Disarming an unknown id claims
	// it.
	Disarm(ctx context.Context, id string) (bool, error)
	// Activate runs `<toplevel>/bin/switch-to-configuration switch` in the transient unit unit, so
	// that a lost connection cannot stop it: it reconnects and polls the unit until it ended. The
	// result holds switch-to-configuration's exit code; an error means its end is unknown.
	Activate(ctx context.Context, unit, toplevel string) (Activation, error)
	// Probe opens a new connection to the node (never a pooled one: handshake and authentication)
	// and returns /run/current-system: the gate's proof that the node can still be reached and runs
	// what it should. Where the new connection runs no command, /run/current-system is read with a
	// command on a connection the System holds (a session of its own: sshd starts a login shell for
	// it), so that both a new connection and a new session are proven.
	Probe(ctx context.Context) (string, error)
}

// ErrNotArmed: the dead-man timer did not start, and the node was left as it was.
var ErrNotArmed = errors.New("the dead-man timer did not start")

// Generation is one generation of the system profile.
type Generation struct {
	Number   int       `json:"generation"`
	Date     time.Time `json:"date"`
	Toplevel string    `json:"toplevel"`
	// Current: the profile's current generation (the boot default).
	Current bool `json:"current"`
	// Revision is the system's configuration revision (system.configurationRevision: the commit it
	// was built from; "dirty" for an uncommitted tree), "" when the system names none.
	Revision string `json:"revision,omitempty"`
}

// CurrentGeneration is the generation of gens marked current, or a zero Generation.
func CurrentGeneration(gens []Generation) Generation {
	for _, g := range gens {
		if g.Current {
			return g
		}
	}
	return Generation{}
}

// FindGeneration is generation n of gens.
func FindGeneration(gens []Generation, n int) (Generation, bool) {
	for _, g := range gens {
		if g.Number == n {
			return g, true
		}
	}
	return Generation{}, false
}

// Activation is how a switch-to-configuration ended.
type Activation struct {
	Unit     string        `json:"unit"`
	ExitCode int           `json:"exit_code"`
	Duration time.Duration `json:"duration_ns"`
	// Reconnected: the connection was lost while it ran; its end was found by polling the unit.
	Reconnected bool `json:"reconnected,omitempty"`
	// Output is the end of what it printed (the unit's journal).
	Output []string `json:"output,omitempty"`
}

// The exit codes of switch-to-configuration (NixOS' switch-to-configuration-ng).
const (
	ExitOK             = 0
	ExitUsage          = 1   // bad action, or installing the bootloader failed
	ExitFailed         = 2   // the activation script failed; the new system is current all the same
	ExitReloadFailed   = 3   // systemd daemon-reload or systemd-tmpfiles failed
	ExitUnitsFailed    = 4   // units failed to start: the new generation is active
	ExitRebootRequired = 100 // the change needs a reboot to complete
)

// ExitMeaning says what an exit code of switch-to-configuration means.
func ExitMeaning(code int) string {
	switch code {
	case ExitOK:
		return "switched"
	case ExitUsage:
		return "bad action or bootloader installation failed"
	case ExitFailed:
		return "activation failed; the new generation is active"
	case ExitReloadFailed:
		return "systemd daemon-reload or tmpfiles failed"
	case ExitUnitsFailed:
		return "units failed; the new generation is active"
	case ExitRebootRequired:
		return "a reboot is required to complete the switch"
	}
	return fmt.Sprintf("unknown exit code %d", code)
}

// ActivationError is an activation that ended with a non-zero exit code.
type ActivationError struct {
	Unit  string
	Code  int
	Lines []string // the end of its output
}

func (e *ActivationError) Error() string {
	return fmt.Sprintf("switch-to-configuration exited %d (%s) in unit %s", e.Code, ExitMeaning(e.Code), e.Unit)
}

// ExitStatus implements pipeline.Failure: the step's exit code is switch-to-configuration's.
func (e *ActivationError) ExitStatus() int { return e.Code }

// Tail implements pipeline.Failure.
func (e *ActivationError) Tail() []string { return e.Lines }
