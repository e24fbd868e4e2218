package nixrunner

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrorKind says why a nix call failed.
type ErrorKind int

const (
	// KindEval: nix failed without a failed build: an evaluation error, a missing attribute, a bad flake
	// reference or argument. Also any other non-zero exit without a sign of a failed build.
	KindEval ErrorKind = iota + 1
	// KindBuild: a derivation failed to build (see classify for how it is told apart from KindEval).
	KindBuild
	// KindCheckFailed: nix flake check found the flake broken, by evaluation or by a failing check build.
	// It is a verdict on the flake, cached by FlakeCheckCached.
	KindCheckFailed
	// KindTimeout: the call's deadline (Config.Timeout or the caller's) passed; nix was stopped.
	KindTimeout
	// KindCanceled: the caller cancelled the context; nix was stopped.
	KindCanceled
	// KindNotFound: the nix executable could not be started.
	KindNotFound
)

func (k ErrorKind) String() string {
	switch k {
	case KindEval:
		return "evaluation error"
	case KindBuild:
		return "build failed"
	case KindCheckFailed:
		return "flake check failed"
	case KindTimeout:
		return "timed out"
	case KindCanceled:
		return "canceled"
	case KindNotFound:
		return "nix not found"
	}
	return fmt.Sprintf("ErrorKind(%d)", int(k))
}

// Error is the error of every failed nix call. Err is the cause: the *exec.ExitError, the start error,
// or, for KindTimeout and KindCanceled, the context's error joined with the exit error, so errors.As and
// errors.Is reach *exec.ExitError, context.Canceled and context.DeadlineExceeded.
type Error struct {
	Op        string   // "build", "eval", "flake check", "check-validity", ...
	Args      []string // nix's arguments, without the executable
	ExitCode  int      // nix's exit status; -1 if it was killed by a signal or never started
	Kind      ErrorKind
	LastLines []string // the last lines nix and the builders printed, ANSI colours removed
	// Cause is what went wrong in one line, from nix's first error: a failed builder's name and its last
	// lines ("nats-conf failed: invalid lame_duck_duration of 20s, minimum is 30 seconds"), or an
	// evaluation error's message with the file:line:column it names in the flake ("flake.nix:12:5:
	// attribute 'x' missing"). Empty when nix printed no error it could be taken from.
	Cause string
	Err   error
}

// errorLines is how many of LastLines Error() shows.
const errorLines = 10

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nix %s: %s", e.Op, e.Kind)
	if e.ExitCode > 0 {
		fmt.Fprintf(&b, " (exit status %d)", e.ExitCode)
	}
	if e.Err != nil && (e.Kind == KindNotFound || e.Kind == KindTimeout || e.Kind == KindCanceled) {
		fmt.Fprintf(&b, ": %v", e.Err)
	} else if e.Cause != "" {
		fmt.Fprintf(&b, ": %s", e.Cause)
	}
	lines := e.LastLines
	if len(lines) > errorLines {
		lines = lines[len(lines)-errorLines:]
	}
	for _, l := range lines {
		b.WriteString("\n  ")
		b.WriteString(l)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the Kind of the *Error in err's chain, or 0 if there is none.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// classify decides the kind of a failed call from what is known after nix exited. The order is:
//
//  1. the context: DeadlineExceeded is KindTimeout, Canceled is KindCanceled (nix was stopped by us);
//  2. an exit status 97..111 is KindBuild: Nix's build statuses are 0b1100000 ORed with 4 (build failed),
//     1 (build timed out), 2 (hash mismatch) and 8 (not deterministic), so 100, 101, 102, 104 and their
//     combinations under --keep-going;
//  3. otherwise (status 1 and the rest) the log decides: nix build exits 1, not 100, for a single failed
//     build in Nix 2.8 and later (NixOS/nix#8782), so a build counts as failed when the builds activity
//     reported a failed build or an error line names one (see buildFailure); else it is KindEval.
//
// For op "flake check", KindEval and KindBuild become KindCheckFailed: both are a verdict on the flake.
func classify(op string, ctxErr error, exitCode int, buildFailed bool) ErrorKind {
	kind := KindEval
	switch {
	case errors.Is(ctxErr, context.DeadlineExceeded):
		return KindTimeout
	case errors.Is(ctxErr, context.Canceled):
		return KindCanceled
	case exitCode > 96 && exitCode < 112, buildFailed:
		kind = KindBuild
	}
	if op == opFlakeCheck {
		return KindCheckFailed
	}
	return kind
}
