package nixrunner

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		op          string
		ctxErr      error
		exitCode    int
		buildFailed bool
		want        ErrorKind
	}{
		{name: "eval error", op: opEval, exitCode: 1, want: KindEval},
		{name: "build exit 1 with failed build in log", op: opBuild, exitCode: 1, buildFailed: true, want: KindBuild},
		{name: "build exit 1 without failed build is eval", op: opBuild, exitCode: 1, want: KindEval},
		{name: "build status 100", op: opBuild, exitCode: 100, want: KindBuild},
		{name: "build status 101 timed out build", op: opBuild, exitCode: 101, want: KindBuild},
		{name: "build status 102 hash mismatch", op: opBuild, exitCode: 102, want: KindBuild},
		{name: "build status 104 not deterministic", op: opBuild, exitCode: 104, want: KindBuild},
		{name: "status 96 is no build status", op: opBuild, exitCode: 96, want: KindEval},
		{name: "flake check build failure", op: opFlakeCheck, exitCode: 100, want: KindCheckFailed},
		{name: "flake check eval error", op: opFlakeCheck, exitCode: 1, want: KindCheckFailed},
		{name: "deadline", op: opFlakeCheck, ctxErr: context.DeadlineExceeded, exitCode: -1, want: KindTimeout},
		{name: "canceled", op: opBuild, ctxErr: context.Canceled, exitCode: 1, buildFailed: true, want: KindCanceled},
		{name: "wrapped deadline", op: opEval, ctxErr: fmt.Errorf("x: %w", context.DeadlineExceeded), want: KindTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := classify(tc.op, tc.ctxErr, tc.exitCode, tc.buildFailed); got != tc.want {
				t.Errorf("classify(%q, %v, %d, %v) = %v, want %v", tc.op, tc.ctxErr, tc.exitCode, tc.buildFailed, got, tc.want)
			}
		})
	}
}

func TestErrorMessageAndUnwrap(t *testing.T) {
	t.Parallel()
	exitErr := &exec.ExitError{}
	lines := make([]string, 15)
	for i := range lines {
		lines[i] = fmt.Sprintf("line %d", i)
	}
	e := &Error{Op: "build", ExitCode: 1, Kind: KindBuild, LastLines: lines,
		Err: fmt.Errorf("%w: %w", context.Canceled, exitErr)}
	var err error = fmt.Errorf("stage build, node nats-1: %w", e)

	msg := err.Error()
	if !strings.HasPrefix(msg, "stage build, node nats-1: nix build: build failed (exit status 1)\n  line 5\n") ||
		!strings.HasSuffix(msg, "\n  line 14") || strings.Contains(msg, "line 4\n") {
		t.Errorf("Error() = %q, want op, kind, status and the last %d lines", msg, errorLines)
	}
	var gotExit *exec.ExitError
	if !errors.As(err, &gotExit) || gotExit != exitErr {
		t.Error("errors.As does not reach the *exec.ExitError")
	}
	if !errors.Is(err, context.Canceled) {
		t.Error("errors.Is does not reach context.Canceled")
	}
	if KindOf(err) != KindBuild || KindOf(errors.New("other")) != 0 {
		t.Error("KindOf does not find the kind")
	}
}
