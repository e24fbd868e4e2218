package nixrunner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Ops, as they appear in Error.Op.
const (
	opEval          = "eval"
	opBuild         = "build"
	opFlakeCheck    = "flake check"
	opCheckValidity = "check-validity"
	opDiffClosures  = "store diff-closures"
	opVersion       = "--version"
)

// experimentalFeatures is passed on every nix command line, whatever nix.conf and NIX_CONFIG say.
var experimentalFeatures = []string{"--extra-experimental-features", "nix-command flakes"}

// Runner runs nix with pinned flags. It holds no state between calls: it is safe for concurrent use, and
// every call starts its own nix process in its own process group, bounded by Config.Timeout.
//
// Every flake command gets --extra-experimental-features 'nix-command flakes', --log-format
// internal-json (parsed into Progress; never -L, which overrides internal-json in Nix 2.8),
// --no-write-lock-file (cimdeploy never changes the tree it deploys: a missing or outdated flake.lock is
// resolved in memory, and the commit's flake.lock is what the check cache keys on), --offline when
// Config.Offline, and --override-input for each Config.OverrideInputs, sorted by input name.
type Runner struct {
	cfg      Config
	nix      string // absolute path of nix
	nixStore string // absolute path of nix-store
	version  string
	env      []string
	logger   *slog.Logger
	runLog   io.Writer
}

// New validates cfg, finds nix and nix-store (Config.Nix, then nix-store beside it) and asks nix for its
// version, which must be 2.8 or newer. A nil logger discards. The error names Debian's nix-bin when nix
// is missing.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nixrunner: %w", err)
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bin := cfg.Nix
	// A bare name ("nix") is looked up in PATH only, as a shell does: a directory called nix in the
	// working directory (a repository's nix/) is not the executable's.
	if fi, err := os.Stat(bin); err == nil && fi.IsDir() && strings.ContainsRune(bin, filepath.Separator) {
		bin = filepath.Join(bin, "nix")
	}
	nix, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("nixrunner: find nix %q (on Debian: apt-get install nix-bin): %w", cfg.Nix, err)
	}
	if nix, err = filepath.Abs(nix); err != nil {
		return nil, fmt.Errorf("nixrunner: %w", err)
	}
	nixStore, err := exec.LookPath(filepath.Join(filepath.Dir(nix), "nix-store"))
	if err != nil {
		return nil, fmt.Errorf("nixrunner: find nix-store beside %s: %w", nix, err)
	}
	r := &Runner{
		cfg:      cfg,
		nix:      nix,
		nixStore: nixStore,
		env:      Environ(nil, cfg.nixConfig()),
		logger:   logger,
	}
	out, err := r.run(ctx, opVersion, r.nix, []string{"--version"}, nil)
	if err != nil {
		return nil, fmt.Errorf("nixrunner: %w", err)
	}
	r.version, err = parseVersion(string(out))
	if err != nil {
		return nil, fmt.Errorf("nixrunner: %s: %w", nix, err)
	}
	logger.Debug("nix found", "nix", nix, "version", r.version)
	return r, nil
}

// parseVersion reads the last word of "nix (Nix) 2.8.0" (or "nix (Lix, like Nix) 2.91.1") and requires
// 2.8 or newer.
func parseVersion(out string) (string, error) {
	fields := strings.Fields(out)
	if len(fields) == 0 {
		return "", errors.New("nix --version printed nothing")
	}
	v := fields[len(fields)-1]
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return "", fmt.Errorf("nix --version: cannot read version %q", v)
	}
	major, err1 := strconv.Atoi(parts[0])
	digits := strings.IndexFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	if digits < 0 {
		digits = len(parts[1])
	}
	minor, err2 := strconv.Atoi(parts[1][:digits])
	if err1 != nil || err2 != nil {
		return "", fmt.Errorf("nix --version: cannot read version %q", v)
	}
	if major < 2 || major == 2 && minor < 8 {
		return "", fmt.Errorf("nix %s is too old: cimdeploy needs Nix 2.8 or newer", v)
	}
	return v, nil
}

// Version is nix's version, e.g. "2.8.0".
func (r *Runner) Version() string { return r.version }

// WithLog returns a Runner that also writes nix's stderr, line by line as nix prints it (internal-json
// for flake commands), to w: the run log. Write errors are logged once per call and otherwise ignored, so
// a broken run log never fails a build. w must be safe for concurrent use if the returned Runner is.
func (r *Runner) WithLog(w io.Writer) *Runner {
	c := *r
	c.runLog = w
	return &c
}

// flakeRef turns a directory into a flake reference. The root of a git work tree (a checkout
// workspace) becomes git+file:, so the flake's self.rev is the commit and every generation names the
// commit it came from (system.configurationRevision); any other directory becomes path:, so the flake
// need not be a git repository and uncommitted files count. A shallow repository gets ?shallow=1. The
// path must not hold the characters a flake URL gives a meaning to.
func flakeRef(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("flake directory %q: %w", dir, err)
	}
	if strings.ContainsAny(abs, "#?% \t\n") {
		return "", fmt.Errorf("flake directory %q: the path must not contain '#', '?', '%%' or blanks", abs)
	}
	st, err := os.Stat(filepath.Join(abs, ".git"))
	if err != nil || !st.IsDir() {
		return "path:" + abs, nil
	}
	// A workspace of a commit with parents holds that commit only and is marked shallow. Nix 2.8 refuses
	// a shallow repository unless the reference says shallow=1 ("is a shallow Git repository, but a
	// non-shallow repository is needed"); newer Nix accepts both forms. Nix leaves self.revCount unset.
	if _, err := os.Stat(filepath.Join(abs, ".git", "shallow")); err == nil {
		return "git+file://" + abs + "?shallow=1", nil
	}
	return "git+file://" + abs, nil
}

// flakeArgs are the pinned flags of every flake command, after the subcommand's own words.
func (r *Runner) flakeArgs(sub ...string) []string {
	args := append([]string{}, experimentalFeatures...)
	args = append(args, "--log-format", "internal-json")
	args = append(args, sub...)
	// No evaluation cache: parallel build workers evaluating the same flake contend for its SQLite file
	// ("SQLite database ... is busy", fatal in Nix 2.8), and a new commit misses the cache anyway.
	args = append(args, "--no-write-lock-file", "--option", "eval-cache", "false")
	if r.cfg.Offline {
		args = append(args, "--offline")
	}
	for _, name := range sortedKeys(r.cfg.OverrideInputs) {
		args = append(args, "--override-input", name, r.cfg.OverrideInputs[name])
	}
	return args
}

// run runs bin with args under ctx and Config.Timeout, in a process group of its own, and returns its
// stdout. Stderr goes to the run log and, line by line, to a logParser that reports progress. A failure
// is an *Error classified by classify.
//
// Stopping: when ctx is done, the whole group gets SIGTERM (nix then stops its builders, which run in
// sessions of their own), and SIGKILL after Config.KillGrace if it is still there; after nix exited,
// the group gets SIGKILL once more so that no process of it survives the call.
func (r *Runner) run(ctx context.Context, op, bin string, args []string, progress func(Progress)) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()

	parser := newLogParser(progress)
	var logErr error
	lines := &lineWriter{line: func(l string) {
		if r.runLog != nil && logErr == nil {
			if _, logErr = io.WriteString(r.runLog, l+"\n"); logErr != nil {
				r.logger.Warn("nix run log write failed", "op", op, "err", logErr)
			}
		}
		parser.line(l)
	}}
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = r.env
	cmd.Stdout = &stdout
	cmd.Stderr = lines
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var killTimer atomic.Pointer[time.Timer]
	cmd.Cancel = func() error {
		pgid := cmd.Process.Pid
		killTimer.Store(time.AfterFunc(r.cfg.KillGrace, func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }))
		if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return os.ErrProcessDone
			}
			return fmt.Errorf("SIGTERM process group %d: %w", pgid, err)
		}
		return nil
	}
	// A backstop only: the timer above SIGKILLs the group first; then Go stops waiting for the pipes.
	cmd.WaitDelay = r.cfg.KillGrace + 5*time.Second

	start := time.Now()
	r.logger.Debug("nix start", "op", op, "args", args)
	err := cmd.Run()
	if t := killTimer.Load(); t != nil {
		t.Stop()
		// The group's leader is reaped; members it left behind still hold the group id, so this reaches
		// only them (ESRCH when there are none).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	lines.flush()
	r.logger.Debug("nix done", "op", op, "duration", time.Since(start), "err", err)
	if err == nil {
		return stdout.Bytes(), nil
	}

	e := &Error{Op: op, Args: args, ExitCode: -1, LastLines: parser.lastLines(), Cause: parser.cause, Err: err}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		e.ExitCode = exitErr.ExitCode()
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		if cause := context.Cause(ctx); cause != nil && cause != ctxErr {
			e.Err = fmt.Errorf("%w (%w): %w", ctxErr, cause, err)
		} else if !errors.Is(err, ctxErr) {
			e.Err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		e.Kind = classify(op, ctxErr, e.ExitCode, parser.buildFailed)
		return nil, e
	}
	if cmd.Process == nil { // never started
		e.Kind = KindNotFound
		return nil, e
	}
	e.Kind = classify(op, nil, e.ExitCode, parser.buildFailed)
	return nil, e
}
