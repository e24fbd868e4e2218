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
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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

// TestSecondOpenSharesAListeningStore: while a process holds the data directory with a listener (serve),
// another Open of the same directory (a command) connects to it with the token the lock file gives,
// sees the same state, and a client without the token is refused.
func TestSecondOpenSharesAListeningStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := open(t, Config{DataDir: dir, Listen: "127.0.0.1:0"})
	second, err := Open(t.Context(), Config{DataDir: dir}, testLogger(t))
	if err != nil {
		t.Fatalf("second Open of a data directory served with a listener: %v", err)
	}
	defer second.Close()
	if err := second.Pause(t.Context(), "ops@example", "freeze"); err != nil {
		t.Fatal(err)
	}
	if st, paused, err := first.Paused(t.Context()); err != nil || !paused || st.Reason != "freeze" {
		t.Errorf("the holder does not see the pause the second Open made: %+v %v %v", st, paused, err)
	}
	if second.ListenURL() != "" {
		t.Errorf("a sharing store has a listener of its own: %q", second.ListenURL())
	}
	bare := strings.Replace(first.ListenURL(), first.token+"@", "", 1)
	if _, err := nats.Connect(bare, nats.Timeout(2*time.Second)); err == nil {
		t.Errorf("a client without the token connected to %s", bare)
	}
	if strings.Contains(fmt.Sprint(err), first.token) {
		t.Error("an error shows the token")
	}
}

// TestUnlockWhileAForkHoldsTheFile: a child forked by another goroutine holds the lock file's open
// file description until it execs; the lock is released at unlock all the same, so the next Open of
// the directory (a command after the store closed, in the same process) gets it.
func TestUnlockWhileAForkHoldsTheFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	forked, err := syscall.Dup(int(l.f.Fd())) // what a fork holds before its exec
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(forked)
	if err := l.unlock(); err != nil {
		t.Fatal(err)
	}
	again, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock, while a fork holds the file: %v", err)
	}
	if err := again.unlock(); err != nil {
		t.Fatal(err)
	}
}
