//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package store

import (
	"errors"
	"fmt"
)

// ErrLocked means another process (or another Store in this process) holds the data directory.
var ErrLocked = errors.New("data directory is locked")

type dirLock struct{}

func lockDir(dir string) (*dirLock, error) {
	return nil, fmt.Errorf("lock %s: the embedded store needs flock(2); set CIMDEPLOY_NATS_URL instead", dir)
}

func (l *dirLock) unlock() error { return nil }

func (l *dirLock) advertise(url, token string) error { return nil }

func advertised(path string) (url, token string, ok bool) { return "", "", false }
