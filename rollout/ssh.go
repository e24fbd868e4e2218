package rollout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
)

// SSHSystem is a node's System over SSH: commands and closure copies on the node's pooled connection
// (remote.Node), the gate's Probe on a connection of its own. Every value reaches the node as an
// argument of a fixed script (remote.Script), never pasted into shell code.
type SSHSystem struct {
	remote.Node
	cfg       remote.Config
	host      remote.Host
	reconnect time.Duration
	poll      time.Duration
	logger    *slog.Logger
}

var _ System = (*SSHSystem)(nil)

// NewSSHSystem is node (from remote.Pool.Node) as a System. cfg and host are how Probe opens its own
// connection; reconnect bounds the time without a connection while an activation runs
// (Config.ReconnectTimeout).
func NewSSHSystem(node remote.Node, cfg remote.Config, host remote.Host, reconnect time.Duration, logger *slog.Logger) *SSHSystem {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &SSHSystem{Node: node, cfg: cfg, host: host, reconnect: reconnect, poll: 250 * time.Millisecond, logger: logger}
}

// stateDir is where cimdeploy keeps its markers on a node: the claims of dead-man timers and the exit
// codes of activations. It is on /run, so a reboot forgets them with the timers.
const stateDir = "/run/cimdeploy"

// output runs argv and returns its standard output (its standard error goes to the run log).
func (s *SSHSystem) output(ctx context.Context, step string, argv ...string) (string, error) {
	var stdout bytes.Buffer
	err := s.Run(ctx, remote.Cmd{Argv: argv, Stdout: &stdout, Step: step})
	return stdout.String(), err
}

// Current implements System.
func (s *SSHSystem) Current(ctx context.Context) (string, error) {
	out, err := s.output(ctx, "read /run/current-system", remote.Script(`readlink /run/current-system || :`)...)
	return strings.TrimSpace(out), err
}

// generationsScript prints one line per generation of profile $1: number, link time (epoch seconds),
// toplevel, "current" or nothing, configuration revision.
const generationsScript = `p=$1
cur=$(readlink "$p" 2>/dev/null) || cur=
for l in "$p"-*-link; do
	[ -L "$l" ] || continue
	n=${l#"$p"-}
	n=${n%-link}
	case $n in '' | *[!0-9]*) continue ;; esac
	t=$(readlink "$l") || continue
	d=$(stat -c %Y "$l") || d=0
	r=
	if [ -r "$t/configuration-revision" ]; then
		r=$(cat "$t/configuration-revision")
	elif [ -x "$t/sw/bin/nixos-version" ]; then
		r=$("$t/sw/bin/nixos-version" --configuration-revision 2>/dev/null) || r=
	fi
	c=
	[ "$cur" = "${l##*/}" ] && c=current
	printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$d" "$t" "$c" "$r"
done`

// Generations implements System.
func (s *SSHSystem) Generations(ctx context.Context) ([]Generation, error) {
	out, err := s.output(ctx, "list generations", remote.Script(generationsScript, SystemProfile)...)
	if err != nil {
		return nil, err
	}
	return parseGenerations(out)
}

// runningScript prints the system /run/current-system points at (an empty line when none), then
// generationsScript's lines for profile $1.
const runningScript = `cur=$(readlink /run/current-system) || cur=
printf '%s\n' "$cur"
` + generationsScript

// Running implements RunningReader: Current and Generations in one command (runningScript).
func (s *SSHSystem) Running(ctx context.Context) (string, []Generation, error) {
	out, err := s.output(ctx, "read /run/current-system and list generations", remote.Script(runningScript, SystemProfile)...)
	if err != nil {
		return "", nil, err
	}
	cur, rest, ok := strings.Cut(out, "\n")
	if !ok {
		return "", nil, fmt.Errorf("read /run/current-system: unexpected output %q", out)
	}
	gens, err := parseGenerations(rest)
	return strings.TrimSpace(cur), gens, err
}

func parseGenerations(out string) ([]Generation, error) {
	var gens []Generation
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 5 {
			return nil, fmt.Errorf("generations: unexpected line %q", line)
		}
		n, err1 := strconv.Atoi(f[0])
		secs, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("generations: unexpected line %q", line)
		}
		gens = append(gens, Generation{Number: n, Date: time.Unix(secs, 0).UTC(), Toplevel: f[2],
			Current: f[3] == "current", Revision: strings.TrimSpace(f[4])})
	}
	slices.SortFunc(gens, func(a, b Generation) int { return a.Number - b.Number })
	return gens, nil
}

// Copy implements System.
func (s *SSHSystem) Copy(ctx context.Context, toplevel string) (remote.Copied, error) {
	return s.CopyClosure(ctx, []string{toplevel})
}

// linkGeneration reads the generation number of a profile link name: system-12-link -> 12.
func linkGeneration(link string) (int, error) {
	name := strings.TrimSuffix(path.Base(link), "-link")
	i := strings.LastIndexByte(name, '-')
	n, err := strconv.Atoi(name[i+1:])
	if i < 0 || err != nil || !strings.HasSuffix(link, "-link") {
		return 0, fmt.Errorf("system profile points at %q, not at a generation link", link)
	}
	return n, nil
}

// SwitchGeneration implements System.
func (s *SSHSystem) SwitchGeneration(ctx context.Context, gen int) error {
	return s.Run(ctx, remote.Cmd{Argv: []string{"nix-env", "-p", SystemProfile, "--switch-generation", strconv.Itoa(gen)},
		Step: fmt.Sprintf("switch the system profile to generation %d", gen)})
}

// deleteScript deletes the generations $2... of profile $1 that exist and are not current.
const deleteScript = `p=$1
shift
cur=$(readlink "$p")
for n; do
	[ -L "$p-$n-link" ] || continue
	[ "$cur" = "${p##*/}-$n-link" ] && continue
	nix-env -p "$p" --delete-generations "$n" >&2 || exit
done`

// DeleteGenerations implements System.
func (s *SSHSystem) DeleteGenerations(ctx context.Context, gens ...int) error {
	if len(gens) == 0 {
		return nil
	}
	args := []string{SystemProfile}
	for _, g := range gens {
		args = append(args, strconv.Itoa(g))
	}
	return s.Run(ctx, remote.Cmd{Argv: remote.Script(deleteScript, args...), Step: fmt.Sprintf("delete generations %v", gens)})
}

// rollbackScript is what a dead-man timer runs on the node: claim the timer (a disarmed one is
// claimed already, and then it does nothing), switch the profile back to generation $4, activate its
// system $5, delete the generation that was current. $1 timer id, $2 nix-env, $3 profile.
const rollbackScript = `mkdir "/run/cimdeploy/$1.claimed" 2>/dev/null || { echo "cimdeploy: rollback $1 was disarmed"; exit 0; }
echo "cimdeploy: the controller did not confirm the switch in time: rolling back to generation $4 ($5)"
bad=$(readlink "$3") || bad=
"$2" -p "$3" --switch-generation "$4" || exit 1
"$5/bin/switch-to-configuration" switch
rc=$?
bad=${bad%-link}
bad=${bad##*-}
if [ -n "$bad" ] && [ "$bad" != "$4" ] && [ -L "$3-$bad-link" ]; then
	"$2" -p "$3" --delete-generations "$bad"
fi
exit $rc`

// timerAccuracy is the dead-man timer's AccuracySec=. systemd's default is 1min (systemd.timer(5)):
// the timer elapses anywhere in [on-active, on-active + AccuracySec] at a per-boot spot, so a confirm
// timeout of a few seconds could roll back up to a minute late.
const timerAccuracy = "100ms"

// armScript starts the dead-man timer, a transient timer unit cimdeploy-rollback-$1 that runs
// rollbackScript ($6) after $2 seconds (AccuracySec $9), back to generation $3 (system $4) of
// profile $5; prints "armed" once it runs; then makes the profile's current generation a new one of
// toplevel $8 when $7 is 0, else the existing generation $7, and prints the profile's link.
//
// A systemd-run unit gets the service manager's environment, not this shell's (systemd.exec(5)):
// everything rollbackScript and switch-to-configuration need from here comes by --setenv, which is
// PATH (for readlink, mkdir and what switch-to-configuration runs); the rest are absolute paths.
const armScript = `set -u
mkdir -p /run/cimdeploy
nixenv=$(command -v nix-env) || { echo "nix-env not found" >&2; exit 1; }
systemd-run --unit="cimdeploy-rollback-$1" --on-active="$2" --timer-property=AccuracySec="$9" --collect --quiet \
	--description="cimdeploy dead-man rollback $1" --setenv=PATH="$PATH" \
	-- /bin/sh -c "$6" cimdeploy-rollback "$1" "$nixenv" "$5" "$3" "$4" || exit
echo armed
if [ "$7" = 0 ]; then
	"$nixenv" -p "$5" --set "$8" >&2 || exit
else
	"$nixenv" -p "$5" --switch-generation "$7" >&2 || exit
fi
readlink "$5" || exit`

// Arm implements System.
func (s *SSHSystem) Arm(ctx context.Context, id string, d time.Duration, back, to Generation) (int, error) {
	if err := checkArm(id, back, to); err != nil {
		return 0, err
	}
	out, err := s.output(ctx, "arm the dead-man rollback "+id+" and set the system profile",
		remote.Script(armScript, armArgs(id, d, back, to)...)...)
	gen, _, err := armed(out, err)
	return gen, err
}

// armArgs are armScript's arguments.
func armArgs(id string, d time.Duration, back, to Generation) []string {
	return []string{id, seconds(d), strconv.Itoa(back.Number), back.Toplevel, SystemProfile, rollbackScript,
		strconv.Itoa(to.Number), to.Toplevel, timerAccuracy}
}

// checkArm refuses what armScript cannot be given, before anything runs.
func checkArm(id string, back, to Generation) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrNotArmed, err)
	}
	if back.Number <= 0 || back.Toplevel == "" {
		return fmt.Errorf("arm rollback %s: %w: no generation to go back to", id, ErrNotArmed)
	}
	if to.Number < 0 || (to.Number == 0 && to.Toplevel == "") {
		return fmt.Errorf("arm rollback %s: %w: no generation to set", id, ErrNotArmed)
	}
	return nil
}

// armed reads what armScript printed ("armed", then the profile's link) and how its command ended
// (err): the generation it made current and the rest of the output. Without "armed" and with an exit
// status the timer did not start (ErrNotArmed); without the link the profile was not set, or it is
// not known whether it was (generation 0, err).
func armed(out string, err error) (int, string, error) {
	first, rest, _ := strings.Cut(out, "\n")
	var ee *remote.ExitError
	if first != "armed" {
		if err != nil && errors.As(err, &ee) {
			return 0, "", fmt.Errorf("%w: %w", ErrNotArmed, err) // the script ended before the timer ran
		}
		if err == nil {
			err = fmt.Errorf("arm: unexpected output %q", first)
		}
		return 0, "", err
	}
	link, rest, complete := strings.Cut(rest, "\n")
	if !complete {
		if err == nil {
			err = errors.New("set the system profile: no profile link printed")
		}
		return 0, "", err
	}
	gen, perr := linkGeneration(strings.TrimSpace(link))
	if perr != nil {
		return 0, "", perr
	}
	return gen, rest, err
}

// seconds formats d for systemd-run --on-active: seconds, with milliseconds when there are any, at
// least one millisecond.
func seconds(d time.Duration) string {
	ms := max(d.Milliseconds(), 1)
	if ms%1000 == 0 {
		return strconv.FormatInt(ms/1000, 10) + "s"
	}
	return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64) + "s"
}

// disarmScript claims timer $1 with an atomic mkdir, which the timer's own script does first too:
// exactly one of them gets it. The claim alone makes the rollback a no-op, so the timer is then
// stopped without waiting for the stop (--no-block): cleanup, not part of the decision.
const disarmScript = `mkdir -p /run/cimdeploy
if mkdir "/run/cimdeploy/$1.claimed" 2>/dev/null; then r=claimed; else r=fired; fi
systemctl stop --no-block "cimdeploy-rollback-$1.timer" >/dev/null 2>&1 || :
echo "$r"`

// Disarm implements System.
func (s *SSHSystem) Disarm(ctx context.Context, id string) (bool, error) {
	if err := checkID(id); err != nil {
		return false, err
	}
	out, err := s.output(ctx, "disarm the dead-man rollback "+id, remote.Script(disarmScript, id)...)
	if err != nil {
		return false, err
	}
	switch strings.TrimSpace(out) {
	case "claimed":
		return true, nil
	case "fired":
		return false, nil
	}
	return false, fmt.Errorf("disarm %s: unexpected output %q", id, out)
}

// statusScript tells how unit $1 is: "exited N" once its exit code is in $2, else "state <ActiveState>".
const statusScript = `if [ -f "$2" ]; then
	read -r rc <"$2"
	echo "exited $rc"
else
	st=$(systemctl show -p ActiveState --value "$1" 2>/dev/null) || st=
	echo "state ${st:-unknown}"
fi`

// activateScript runs switchScript ($4) as the transient unit $1 and waits for it: the unit belongs
// to systemd, not to this session, so a dropped connection cannot stop it. Like armScript it passes
// PATH, the only thing of this shell the unit needs (systemd.exec(5): units get the manager's
// environment). $2 the file the unit
// writes switch-to-configuration's exit code to, $3 toplevel. Then it prints the unit's status
// (statusScript) and the end of its journal: one round trip for the whole activation.
const activateScript = `set -u
mkdir -p /run/cimdeploy
rm -f "$2"
systemd-run --unit="$1" --collect --service-type=exec --wait --quiet \
	--description="cimdeploy switch to $3" --setenv=PATH="$PATH" \
	-- /bin/sh -c "$4" cimdeploy-switch "$3" "$2" >&2
` + statusScript + `
journalctl -u "$1" -n 50 --no-pager -o cat 2>/dev/null || :`

// switchScript is the unit's command: switch, and keep the exit code where a reconnected controller
// finds it after the unit is gone (--collect).
const switchScript = `"$1/bin/switch-to-configuration" switch
rc=$?
printf '%s\n' "$rc" >"$2.tmp" && mv -f "$2.tmp" "$2"
exit $rc`

// unitStatus reads statusScript's line: the exit code once the unit has ended with one (exited),
// else the unit's ActiveState.
func unitStatus(unit, line string) (code int, exited bool, state string, err error) {
	word, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch word {
	case "state":
		return 0, false, rest, nil
	case "exited":
	default:
		return 0, false, "", nil // not statusScript's: treated as a unit gone
	}
	code, err = strconv.Atoi(rest)
	if err != nil {
		return 0, false, "", fmt.Errorf("unit %s: exit code %q", unit, rest)
	}
	return code, true, "", nil
}

// Activate implements System. The unit's standard output and error go to the journal; their end is
// in the result. When the SSH command fails for any reason but ctx (a dropped connection, a killed
// session), Activate polls the unit over a new connection, for up to the reconnect timeout without
// one, until the unit has ended.
func (s *SSHSystem) Activate(ctx context.Context, unit, toplevel string) (Activation, error) {
	start := time.Now()
	act := Activation{Unit: unit}
	if err := checkID(unit); err != nil {
		return act, err
	}
	status := stateDir + "/" + unit + ".status"
	var stdout bytes.Buffer
	err := s.Run(ctx, remote.Cmd{Argv: remote.Script(activateScript, unit, status, toplevel, switchScript),
		Stdout: &stdout, Step: "activate " + unit})
	return s.activation(ctx, act, status, start, stdout.String(), err)
}

// armActivateScript is armScript, then activateScript with the unit $10, its exit-code file $11,
// the toplevel $8 and switchScript $12: one round trip arms the dead-man timer, sets the profile, runs
// the activation unit and brings its result. The unit starts only once the timer runs and the profile
// is set (armScript exits otherwise).
const armActivateScript = armScript + `
set -- "${10}" "${11}" "$8" "${12}"
` + activateScript

// ArmActivate implements System in one SSH command (armActivateScript): its output is armScript's
// ("armed", the profile's link), then activateScript's.
func (s *SSHSystem) ArmActivate(ctx context.Context, id string, d time.Duration, back, to Generation, unit string) (int, Activation, error) {
	start := time.Now()
	act := Activation{Unit: unit}
	if err := checkArm(id, back, to); err != nil {
		return 0, act, err
	}
	if err := checkID(unit); err != nil {
		return 0, act, fmt.Errorf("%w: %w", ErrNotArmed, err)
	}
	if to.Toplevel == "" {
		return 0, act, fmt.Errorf("arm rollback %s: %w: no system to activate", id, ErrNotArmed)
	}
	status := stateDir + "/" + unit + ".status"
	var stdout bytes.Buffer
	err := s.Run(ctx, remote.Cmd{Argv: remote.Script(armActivateScript, append(armArgs(id, d, back, to), unit, status, switchScript)...),
		Stdout: &stdout, Step: "arm the dead-man rollback " + id + ", set the system profile, activate " + unit})
	gen, rest, err := armed(stdout.String(), err)
	if gen == 0 {
		var ee *remote.ExitError
		if err != nil && !errors.Is(err, ErrNotArmed) && !errors.As(err, &ee) && ctx.Err() == nil {
			// The connection went while the profile was being set: should the unit have started
			// after all, it must have ended before the caller rolls back.
			if _, werr := s.waitUnit(ctx, unit, status); werr == nil {
				err = fmt.Errorf("%w (the activation ran, unseen)", err)
			}
		}
		act.Duration = time.Since(start)
		return 0, act, err
	}
	act, err = s.activation(ctx, act, status, start, rest, err)
	return gen, act, err
}

// activation reads what activateScript printed (out: its status line and the unit's journal) and how
// its command ended (err); when the command failed for any reason but ctx, it polls the unit for its
// end. start is when the command started.
func (s *SSHSystem) activation(ctx context.Context, act Activation, status string, start time.Time, out string, err error) (Activation, error) {
	unit := act.Unit
	if ctx.Err() != nil {
		act.Duration = time.Since(start)
		return act, fmt.Errorf("activation %s: %w (it goes on in its unit on the node)", unit, ctx.Err())
	}
	code, exited := 0, false
	if err == nil {
		// The usual end: the command waited for the unit and brought its exit code and journal.
		first, journal, _ := strings.Cut(out, "\n")
		var perr error
		if code, exited, _, perr = unitStatus(unit, first); perr != nil {
			return act, perr
		}
		act.Duration, act.Output = time.Since(start), lines(journal)
	}
	if !exited {
		var ee *remote.ExitError
		if err != nil && !errors.As(err, &ee) {
			act.Reconnected = true
			s.logger.Warn("connection lost during the activation: reconnecting to poll its unit", "node", s.Name(), "unit", unit, "err", err)
		}
		var werr error
		code, werr = s.waitUnit(ctx, unit, status)
		act.Duration = time.Since(start)
		act.Output = s.journal(ctx, unit)
		if werr != nil {
			if err != nil {
				werr = fmt.Errorf("%w (systemd-run: %w)", werr, err)
			}
			return act, werr
		}
	}
	act.ExitCode = code
	if code != ExitOK {
		return act, &ActivationError{Unit: unit, Code: code, Lines: act.Output}
	}
	return act, nil
}

// waitUnit polls unit until its exit code is there. A unit gone without one (killed, or never
// started) is an error; so is no connection for the reconnect timeout.
func (s *SSHSystem) waitUnit(ctx context.Context, unit, status string) (int, error) {
	lastOK := time.Now()
	gone := 0
	tick := time.NewTicker(s.poll)
	defer tick.Stop()
	for {
		out, err := s.output(ctx, "poll "+unit, remote.Script(statusScript, unit, status)...)
		switch {
		case err == nil:
			lastOK = time.Now()
			code, exited, state, err := unitStatus(unit, out)
			switch {
			case err != nil:
				return 0, err
			case exited:
				return code, nil
			case state == "active" || state == "activating" || state == "deactivating" || state == "reloading":
				gone = 0
			default:
				// Ended without an exit code: look once more (its last write may be on its way).
				if gone++; gone > 1 {
					return 0, fmt.Errorf("unit %s ended without an exit code (%s): it was killed or never started", unit, strings.TrimSpace(out))
				}
			}
		case ctx.Err() != nil:
			return 0, fmt.Errorf("activation %s: %w (it goes on in its unit on the node)", unit, ctx.Err())
		case time.Since(lastOK) > s.reconnect:
			return 0, fmt.Errorf("activation %s: no connection to the node for %s (CIMDEPLOY_ROLLOUT_RECONNECT_TIMEOUT): %w", unit, s.reconnect, err)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// journal is the end of unit's journal; best effort.
func (s *SSHSystem) journal(ctx context.Context, unit string) []string {
	out, err := s.output(ctx, "journal of "+unit, "journalctl", "-u", unit, "-n", "50", "--no-pager", "-o", "cat")
	if err != nil {
		return nil
	}
	return lines(out)
}

// Probe implements System: a new connection from a pool of its own (TCP, SSH handshake with the
// pinned host key, authentication; closed again) and, at the same time, /run/current-system read with
// a command on the node's pooled connection. The new connection proves that sshd still accepts and
// authenticates; the command, a session of its own, proves that the node's sshd can still start a
// login shell and run a command (as on every SSH connection, each command is a new session). Running
// no command on the new connection saves a second session's set-up on the gate's path.
func (s *SSHSystem) Probe(ctx context.Context) (string, error) {
	connected := make(chan error, 1)
	go func() { connected <- s.connect(ctx) }()
	cur, err := s.Current(ctx)
	if cerr := <-connected; cerr != nil {
		return "", cerr
	}
	return cur, err
}

// connect opens a new connection to the node and closes it again.
func (s *SSHSystem) connect(ctx context.Context) error {
	p, err := remote.NewPool(s.cfg, remote.Options{Logger: s.logger})
	if err != nil {
		return err
	}
	defer p.Close()
	c, err := p.Client(s.host)
	if err != nil {
		return err
	}
	return c.Connect(ctx)
}

// checkID accepts what a systemd unit name and a file name both take.
func checkID(id string) error {
	if id == "" || len(id) > 200 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != "" || id[0] == '.' {
		return fmt.Errorf("id %q: want letters, digits, '-', '_', '.'", id)
	}
	return nil
}

func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
