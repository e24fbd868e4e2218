package nixrunner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// FlakeCheck runs nix flake check on the flake in flakeDir: it evaluates every output and builds the
// checks of this system. progress is as for Build. Any failure nix reports, of evaluation or of a check
// build, is an *Error of KindCheckFailed with the last log lines; KindTimeout, KindCanceled and
// KindNotFound are not verdicts on the flake.
func (r *Runner) FlakeCheck(ctx context.Context, flakeDir string, progress func(Progress)) error {
	ref, err := flakeRef(flakeDir)
	if err != nil {
		return fmt.Errorf("nix flake check: %w", err)
	}
	// --show-trace makes nix name the output it was checking ("while checking the NixOS configuration
	// 'nixosConfigurations.nats-2'"), so a failure can be pinned on a node.
	_, err = r.run(ctx, opFlakeCheck, r.nix, r.flakeArgs("flake", "check", "--show-trace", ref), progress)
	return err
}

// Verdict is the outcome of a nix flake check, as a CheckCache stores it (JSON).
type Verdict struct {
	Passed     bool      `json:"passed"`
	LastLines  []string  `json:"last_lines,omitempty"` // of a failed check
	Cause      string    `json:"cause,omitempty"`      // of a failed check: see Error.Cause
	NixVersion string    `json:"nix_version"`
	CheckedAt  time.Time `json:"checked_at"`
}

// CheckCache stores flake check verdicts by CheckKey. Get's bool says whether key was found. A
// CheckCache must be safe for concurrent use. The NATS KV implementation lives elsewhere;
// MemoryCheckCache keeps verdicts for the life of the process.
type CheckCache interface {
	Get(ctx context.Context, key string) (Verdict, bool, error)
	Put(ctx context.Context, key string, v Verdict) error
}

var commitSHA = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

// CheckKey is the cache key of a flake check verdict: the commit (a full lower-case 40-hex SHA-1 or
// 64-hex SHA-256 object name) and the SHA-256 of the flake.lock content together with the override
// inputs (they replace locked inputs, so they change what is checked). A flake without flake.lock hashes
// empty content. The key is the commit followed by that hash in hex: 104 (or 128) lower-case hex digits,
// valid as a NATS KV key and for pipeline/store's check cache.
func CheckKey(commit string, flakeLock []byte, overrideInputs map[string]string) (string, error) {
	if !commitSHA.MatchString(commit) {
		return "", fmt.Errorf("check key: commit %q is not a full lower-case hex object name", commit)
	}
	h := sha256.New()
	h.Write(flakeLock)
	for _, name := range sortedKeys(overrideInputs) {
		fmt.Fprintf(h, "\x00--override-input\x00%s\x00%s", name, overrideInputs[name])
	}
	return commit + hex.EncodeToString(h.Sum(nil)), nil
}

// FlakeCheckCached is FlakeCheck behind cache, keyed by CheckKey(commit, flakeDir/flake.lock,
// Config.OverrideInputs). The caller promises that flakeDir holds commit's tree. On a hit nix is not run
// and cached is true: a passed verdict returns nil, a failed one the same *Error of KindCheckFailed with
// the saved last lines (Err nil, ExitCode -1). On a miss the check runs and a verdict, passed or failed,
// is stored; timeouts, cancellation and a missing nix are not verdicts and are not stored. A cache that
// fails to answer or to store is logged and otherwise ignored. A nil cache always runs the check.
func (r *Runner) FlakeCheckCached(ctx context.Context, cache CheckCache, commit, flakeDir string, progress func(Progress)) (cached bool, err error) {
	lock, err := os.ReadFile(filepath.Join(flakeDir, "flake.lock"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("nix flake check: %w", err)
	}
	key, err := CheckKey(commit, lock, r.cfg.OverrideInputs)
	if err != nil {
		return false, fmt.Errorf("nix flake check: %w", err)
	}
	log := r.logger.With("commit", commit, "key", key)
	if cache != nil {
		v, ok, err := cache.Get(ctx, key)
		switch {
		case err != nil:
			log.Warn("flake check cache get failed; checking", "err", err)
		case ok && v.Passed:
			log.Debug("flake check cached: passed")
			return true, nil
		case ok:
			log.Debug("flake check cached: failed")
			return true, &Error{Op: opFlakeCheck, ExitCode: -1, Kind: KindCheckFailed, LastLines: v.LastLines, Cause: v.Cause}
		}
	}
	err = r.FlakeCheck(ctx, flakeDir, progress)
	v := Verdict{Passed: err == nil, NixVersion: r.version, CheckedAt: time.Now().UTC()}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) || e.Kind != KindCheckFailed {
			return false, err
		}
		v.LastLines, v.Cause = e.LastLines, e.Cause
	}
	if cache != nil {
		if perr := cache.Put(ctx, key, v); perr != nil {
			log.Warn("flake check cache put failed", "err", perr)
		}
	}
	return false, err
}

// MemoryCheckCache is a CheckCache in memory, for a process without NATS. The zero value is ready and
// safe for concurrent use; it never forgets.
type MemoryCheckCache struct {
	mu sync.Mutex
	m  map[string]Verdict
}

func (c *MemoryCheckCache) Get(_ context.Context, key string) (Verdict, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	v.LastLines = append([]string(nil), v.LastLines...)
	return v, ok, nil
}

func (c *MemoryCheckCache) Put(_ context.Context, key string, v Verdict) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]Verdict{}
	}
	v.LastLines = append([]string(nil), v.LastLines...)
	c.m[key] = v
	return nil
}
