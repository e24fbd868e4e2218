package rollout

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
)

var _ ModeSystem = (*SSHSystem)(nil)

// actionScript is switchScript with another action of switch-to-configuration.
func actionScript(action Mode) string {
	return strings.Replace(switchScript, `switch-to-configuration" switch`, `switch-to-configuration" `+string(action), 1)
}

// checkAction accepts the actions a mode runs.
func checkAction(action Mode) error {
	switch action {
	case ModeSwitch, ModeTest, ModeBoot:
		return nil
	}
	return fmt.Errorf("switch-to-configuration action %q: want switch, test or boot", action)
}

// ActivateAction implements ModeSystem.
func (s *SSHSystem) ActivateAction(ctx context.Context, unit, toplevel string, action Mode) (Activation, error) {
	start := time.Now()
	act := Activation{Unit: unit}
	if err := checkAction(action); err != nil {
		return act, err
	}
	if err := checkID(unit); err != nil {
		return act, err
	}
	status := stateDir + "/" + unit + ".status"
	var stdout bytes.Buffer
	err := s.Run(ctx, remote.Cmd{Argv: remote.Script(activateScript, unit, status, toplevel, actionScript(action)),
		Stdout: &stdout, Step: "activate " + unit + " (" + string(action) + ")"})
	return s.activation(ctx, act, status, start, stdout.String(), err)
}

// testRollbackScript is what the dead-man timer of a test activation runs: claim the timer (as
// rollbackScript does), then activate system $2 again with `switch-to-configuration test`; the
// profile is not touched. $1 timer id.
const testRollbackScript = `mkdir "/run/cimdeploy/$1.claimed" 2>/dev/null || { echo "cimdeploy: rollback $1 was disarmed"; exit 0; }
echo "cimdeploy: the controller did not confirm the test activation in time: activating $2 again"
exec "$2/bin/switch-to-configuration" test`

// armTestScript starts the dead-man timer cimdeploy-rollback-$1 that runs testRollbackScript ($4)
// with system $5 after $2 seconds (AccuracySec $3), prints "armed", then runs activateScript with the
// unit $6, its exit-code file $7, toplevel $8 and the test action's switch script $9. As in armScript,
// PATH is the only thing of this shell the units need.
const armTestScript = `set -u
mkdir -p /run/cimdeploy
systemd-run --unit="cimdeploy-rollback-$1" --on-active="$2" --timer-property=AccuracySec="$3" --collect --quiet \
	--description="cimdeploy dead-man revert $1" --setenv=PATH="$PATH" \
	-- /bin/sh -c "$4" cimdeploy-rollback "$1" "$5" || exit
echo armed
set -- "$6" "$7" "$8" "$9"
` + activateScript

// ArmTest implements ModeSystem in one SSH command (armTestScript).
func (s *SSHSystem) ArmTest(ctx context.Context, id string, d time.Duration, back, to, unit string) (Activation, error) {
	start := time.Now()
	act := Activation{Unit: unit}
	switch {
	case checkID(id) != nil:
		return act, fmt.Errorf("%w: %w", ErrNotArmed, checkID(id))
	case checkID(unit) != nil:
		return act, fmt.Errorf("%w: %w", ErrNotArmed, checkID(unit))
	case back == "" || to == "":
		return act, fmt.Errorf("arm revert %s: %w: no system to go back to or to activate", id, ErrNotArmed)
	}
	status := stateDir + "/" + unit + ".status"
	var stdout bytes.Buffer
	err := s.Run(ctx, remote.Cmd{Argv: remote.Script(armTestScript, id, seconds(d), timerAccuracy, testRollbackScript, back,
		unit, status, to, actionScript(ModeTest)), Stdout: &stdout, Step: "arm the dead-man revert " + id + ", activate " + unit + " (test)"})
	first, rest, _ := strings.Cut(stdout.String(), "\n")
	if first != "armed" {
		var ee *remote.ExitError
		if err != nil && errors.As(err, &ee) {
			return act, fmt.Errorf("%w: %w", ErrNotArmed, err)
		}
		if err == nil {
			err = fmt.Errorf("arm: unexpected output %q", first)
		}
		act.Duration = time.Since(start)
		return act, err // unknown: the caller reverts, which is harmless when nothing ran
	}
	return s.activation(ctx, act, status, start, rest, err)
}

// bootRollbackScript is rollbackScript with `switch-to-configuration boot`: the dead-man timer of a
// boot sets the previous generation as the boot default again and activates nothing.
var bootRollbackScript = strings.Replace(rollbackScript, `/bin/switch-to-configuration" switch`, `/bin/switch-to-configuration" boot`, 1)

// ArmBoot implements ModeSystem with armActivateScript, given bootRollbackScript and the boot
// action's switch script.
func (s *SSHSystem) ArmBoot(ctx context.Context, id string, d time.Duration, back, to Generation, unit string) (int, Activation, error) {
	start := time.Now()
	act := Activation{Unit: unit}
	if err := checkArm(id, back, to); err != nil {
		return 0, act, err
	}
	if err := checkID(unit); err != nil {
		return 0, act, fmt.Errorf("%w: %w", ErrNotArmed, err)
	}
	if to.Toplevel == "" {
		return 0, act, fmt.Errorf("arm rollback %s: %w: no system to boot", id, ErrNotArmed)
	}
	args := armArgs(id, d, back, to)
	args[5] = bootRollbackScript
	status := stateDir + "/" + unit + ".status"
	var stdout bytes.Buffer
	err := s.Run(ctx, remote.Cmd{Argv: remote.Script(armActivateScript, append(args, unit, status, actionScript(ModeBoot))...),
		Stdout: &stdout, Step: "arm the dead-man rollback " + id + ", set the system profile, " + unit + " (boot)"})
	gen, rest, err := armed(stdout.String(), err)
	if gen == 0 {
		act.Duration = time.Since(start)
		return 0, act, err
	}
	act, err = s.activation(ctx, act, status, start, rest, err)
	return gen, act, err
}

// inhibitorsScript prints, for each toplevel argument, one line: "absent" when it is not in the
// store, "none" when it has no switch-inhibitors file, else "file " and the file's first 64 KiB in
// base64.
const inhibitorsScript = `for t; do
	if [ ! -e "$t" ]; then
		echo absent
	elif [ ! -f "$t/switch-inhibitors" ]; then
		echo none
	else
		printf 'file %s\n' "$(head -c 65536 "$t/switch-inhibitors" | base64 | tr -d '\n')"
	fi
done`

// SwitchInhibitors implements ModeSystem.
func (s *SSHSystem) SwitchInhibitors(ctx context.Context, toplevels ...string) ([]Inhibitors, error) {
	for _, t := range toplevels {
		if !strings.HasPrefix(t, "/nix/store/") || strings.ContainsAny(t, "\n\t") {
			return nil, fmt.Errorf("switch inhibitors: %q is no store path", t)
		}
	}
	out, err := s.output(ctx, "read the switch inhibitors", remote.Script(inhibitorsScript, toplevels...)...)
	if err != nil {
		return nil, err
	}
	return parseInhibitorLines(out, len(toplevels))
}

// parseInhibitorLines reads inhibitorsScript's output for n toplevels.
func parseInhibitorLines(out string, n int) ([]Inhibitors, error) {
	ls := lines(out)
	if len(ls) != n {
		return nil, fmt.Errorf("switch inhibitors: %d lines for %d systems", len(ls), n)
	}
	res := make([]Inhibitors, n)
	for i, l := range ls {
		word, rest, _ := strings.Cut(l, " ")
		switch word {
		case "absent":
		case "none":
			res[i].Present = true
		case "file":
			raw, err := base64.StdEncoding.DecodeString(rest)
			if err != nil {
				return nil, fmt.Errorf("switch inhibitors: line %d: %w", i+1, err)
			}
			res[i] = Inhibitors{Present: true, Values: parseInhibitors(raw)}
		default:
			return nil, fmt.Errorf("switch inhibitors: unexpected line %q", l)
		}
	}
	return res, nil
}
