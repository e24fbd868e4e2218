//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrLocked means another process (or another Store in this process) holds the data directory.
var ErrLocked = errors.New("data directory is locked")

// dirLock is an exclusive flock(2) on <dir>/lock. The kernel drops it when the holder dies, so a
// crash leaves no stale lock; the file itself stays and only says the last holder's pid. flock locks
// belong to the open file, so two Opens in one process exclude each other too.
type dirLock struct{ f *os.File }

func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := flock(f); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another cimdeploy holds %s (%s): %w", dir, holder(path), ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
		return nil, fmt.Errorf("write lock file: %w", err)
	}
	return &dirLock{f: f}, nil
}

func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// advertise adds to the lock file where the holder's embedded server accepts clients, with the token
// they need: another cimdeploy of the same data directory (a command while serve runs) connects there
// instead of failing on the lock. The file is the holder's alone (0600 in a 0700 directory).
func (l *dirLock) advertise(url, token string) error {
	_, err := l.f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"+url+"\n"+token+"\n"), 0)
	return err
}

// advertised is the client URL and token a live holder wrote into the lock file at path, if any.
func advertised(path string) (url, token string, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 4096 {
		return "", "", false
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "nats://") || lines[2] == "" {
		return "", "", false
	}
	return lines[1], lines[2], true
}

// holder names the pid written by the holder, when it has written one yet.
func holder(path string) string {
	b, err := os.ReadFile(path)
	first, _, _ := strings.Cut(string(b), "\n")
	if pid, perr := strconv.Atoi(strings.TrimSpace(first)); err == nil && perr == nil {
		return "pid " + strconv.Itoa(pid)
	}
	return "pid unknown"
}

// unlock releases the lock; the file stays, so that no one locks a file about to be removed. The lock
// belongs to the open file description, which a child forked by another goroutine holds too until it
// execs (close-on-exec closes it only then): closing the file alone would leave the lock held for that
// moment, and the next Open of the directory fail. LOCK_UN releases it for every holder at once.
func (l *dirLock) unlock() error {
	err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	return errors.Join(err, l.f.Close())
}
