//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// TestLockAcrossProcesses runs a second process (this test binary) that opens the store and holds it
// until its stdin closes: the second of two CLIs on one DataDir is refused with the holder's pid.
func TestLockAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("CIMDEPLOY_TEST_LOCK_HOLDER"); dir != "" {
		holdLock(dir)
		return
	}
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestLockAcrossProcesses$")
	cmd.Env = append(os.Environ(), "CIMDEPLOY_TEST_LOCK_HOLDER="+dir)
	cmd.Stderr = tWriter{t}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "holding\n" {
		t.Fatalf("holder said %q, %v", line, err)
	}

	_, err = Open(t.Context(), Config{DataDir: dir}, testLogger(t))
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open while another process holds the dir: err = %v, want ErrLocked", err)
	}
	if want := fmt.Sprintf("(pid %d)", cmd.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Errorf("err = %q, want the holder's %s", err, want)
	}

	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	s := open(t, Config{DataDir: dir})
	if runs, err := s.Runs(t.Context(), 0); err != nil || len(runs) != 1 {
		t.Errorf("runs the holder reported: %+v, %v", runs, err)
	}
}

// holdLock is the other process: open, report a run, say so, wait for stdin to close, close.
func holdLock(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "holder:", err)
		os.Exit(1)
	}
	s, err := Open(context.Background(), Config{DataDir: dir}, nil)
	if err != nil {
		fail(err)
	}
	ev := pipeline.Event{EventID: "e1", AggregateID: "run-1", Sequence: 1, Type: pipeline.RunQueued, Data: []byte(`{"run":{}}`)}
	if err := s.Report(context.Background(), ev); err != nil {
		fail(err)
	}
	fmt.Println("holding")
	io.Copy(io.Discard, os.Stdin)
	if err := s.Close(); err != nil {
		fail(err)
	}
}
