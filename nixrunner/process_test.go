package nixrunner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// proc is a live (not zombie) process seen in /proc.
type proc struct {
	pid, pgid int
	comm      string
}

// procs lists the live processes of the machine.
func procs() []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold blanks and parentheses.
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(string(stat[end+1:]))
		if len(fields) < 3 || fields[0] == "Z" || fields[0] == "X" {
			continue
		}
		pgid, _ := strconv.Atoi(fields[2])
		out = append(out, proc{pid: pid, pgid: pgid, comm: string(stat[open+1 : end])})
	}
	return out
}

func (p proc) cmdline() string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

func (p proc) hasEnv(kv string) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.pid))
	for v := range bytes.SplitSeq(b, []byte{0}) {
		if string(v) == kv {
			return true
		}
	}
	return false
}

// waitGone polls /proc until no live process matches, and fails after 10 s.
func waitGone(t *testing.T, match func(proc) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var left []string
		for _, p := range procs() {
			if match(p) {
				left = append(left, fmt.Sprintf("%d %s", p.pid, p.comm))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s survived: %v", what, left)
		}
		<-tick.C
	}
}

// fakeNix writes a nix and nix-store into a directory: both answer --version like Nix 2.8; otherwise
// they write their pid to pidfile, print one internal-json log line, ignore SIGTERM and sleep, with a
// background sleep in the same process group. Only SIGKILL of the whole group stops them.
func fakeNix(t *testing.T) (dir, pidfile string) {
	t.Helper()
	dir = t.TempDir()
	pidfile = filepath.Join(dir, "pid")
	script := `#!/bin/sh
for a in "$@"; do
  if [ "$a" = --version ]; then echo "nix (Nix) 2.8.0"; exit 0; fi
done
trap '' TERM
echo $$ > ` + pidfile + `.tmp && mv ` + pidfile + `.tmp ` + pidfile + `
sleep 300 &
echo '@nix {"action":"result","fields":["ignoring SIGTERM"],"id":1,"type":101}' >&2
sleep 300
`
	for _, name := range []string{"nix", "nix-store"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, pidfile
}

// TestCancelEscalatesToSIGKILL runs a fake nix that ignores SIGTERM: cancelling must still stop its
// whole process group, by SIGKILL after KillGrace.
func TestCancelEscalatesToSIGKILL(t *testing.T) {
	t.Parallel()
	dir, pidfile := fakeNix(t)
	const grace = 300 * time.Millisecond
	r, err := New(t.Context(), Config{Nix: dir, KillGrace: grace}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Version() != "2.8.0" {
		t.Errorf("Version() = %q", r.Version())
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var cancelled time.Time
	_, err = r.Build(ctx, t.TempDir(), []string{"x"}, func(p Progress) {
		if p.Line == "ignoring SIGTERM" && cancelled.IsZero() {
			cancelled = time.Now()
			cancel()
		}
	})
	asError(t, err, KindCanceled)
	if cancelled.IsZero() {
		t.Fatal("the fake nix never printed its line")
	}
	if d := time.Since(cancelled); d < grace {
		t.Errorf("Build returned %v after cancel, before the kill grace %v: SIGTERM was not ignored?", d, grace)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	waitGone(t, func(p proc) bool { return p.pgid == pgid }, fmt.Sprintf("process group %d", pgid))
}

// TestTimeoutFakeNix: the per-call timeout stops a hanging nix as Kind Timeout.
func TestTimeoutFakeNix(t *testing.T) {
	t.Parallel()
	dir, _ := fakeNix(t)
	r, err := New(t.Context(), Config{Nix: dir, Timeout: 200 * time.Millisecond, KillGrace: 100 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Valid(t.Context(), "/nix/store/00000000000000000000000000000000-x")
	e := asError(t, err, KindTimeout)
	if !errors.Is(err, context.DeadlineExceeded) || e.Op != "check-validity" || !strings.Contains(err.Error(), "ignoring SIGTERM") {
		t.Errorf("error = %v (%+v)", err, e)
	}
}

// TestNixVanished: a nix that disappears after New is KindNotFound.
func TestNixVanished(t *testing.T) {
	t.Parallel()
	dir, _ := fakeNix(t)
	r, err := New(t.Context(), Config{Nix: filepath.Join(dir, "nix")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "nix")); err != nil {
		t.Fatal(err)
	}
	var v any
	err = r.Eval(t.Context(), t.TempDir(), "x", &v)
	e := asError(t, err, KindNotFound)
	if !errors.Is(err, os.ErrNotExist) || e.ExitCode != -1 {
		t.Errorf("error = %v (%+v)", err, e)
	}
}

// TestCanceledBeforeStart: a context done before the call is KindCanceled, not a missing nix.
func TestCanceledBeforeStart(t *testing.T) {
	t.Parallel()
	dir, _ := fakeNix(t)
	r, err := New(t.Context(), Config{Nix: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = r.Valid(ctx, "/nix/store/00000000000000000000000000000000-x")
	asError(t, err, KindCanceled)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%v, Canceled) is false", err)
	}
}
