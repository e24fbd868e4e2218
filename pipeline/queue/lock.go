package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// lockKey is the key of the deploy lock: one deploy at a time for everything sharing the NATS.
const lockKey = "deploy"

// errLockLost is the cause of a deploy's cancellation when its lock lapsed or was taken over.
var errLockLost = errors.New("deploy lock lost: its lease lapsed or another process took it")

// deployLock is the held deploy lock: a key in cimdeploy_locks, created by its holder and renewed
// every DeployLease/3 with a compare-and-set on its revision. The bucket's TTL (DeployLease) removes
// it when its holder stops renewing, so another process takes it over after at most DeployLease.
type deployLock struct {
	q        *Queue
	mu       sync.Mutex
	rev      uint64
	lost     func(error) // called once when the lock is lost while held
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// lockDeploy waits until it holds the deploy lock or ctx ends. It watches the key so that a released
// lock is taken at once, and tries again every DeployLease/4 for one that lapsed (a lapse leaves no
// event to watch). lost is called, once, if the lock is lost before release.
func (q *Queue) lockDeploy(ctx context.Context, lost func(error)) (*deployLock, error) {
	watch, err := q.locks.Watch(ctx, lockKey, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("deploy lock: watch bucket %s: %w", store.BucketLocks, err)
	}
	defer watch.Stop()
	retry := time.NewTicker(q.cfg.DeployLease / 4)
	defer retry.Stop()
	waiting := false
	for {
		rev, err := q.locks.Create(ctx, lockKey, []byte(q.owner))
		if err == nil {
			l := &deployLock{q: q, rev: rev, lost: lost, stop: make(chan struct{}), done: make(chan struct{})}
			go l.renew()
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			q.logger.Warn("deploy lock", "err", err)
		} else if !waiting {
			waiting = true
			holder := "?"
			if e, err := q.locks.Get(ctx, lockKey); err == nil {
				holder = string(e.Value())
			}
			q.logger.Info("waiting for the deploy lock", "holder", holder)
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-watch.Updates():
		case <-retry.C:
		}
	}
}

// renew puts the lock again every DeployLease/3 until release; it reports the lock lost when the key
// changed hands or vanished, or when no renewal succeeded for two thirds of a lease.
func (l *deployLock) renew() {
	defer close(l.done)
	lease := l.q.cfg.DeployLease
	tick := time.NewTicker(lease / 3)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), lease/3)
		l.mu.Lock()
		rev, err := l.q.locks.Update(ctx, lockKey, []byte(l.q.owner), l.rev)
		if err == nil {
			l.rev = rev
		}
		l.mu.Unlock()
		cancel()
		switch {
		case err == nil:
			last = time.Now()
			continue
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyNotFound):
		case time.Since(last) < lease*2/3:
			// Two failed renewals in a row end the hold a third of a lease before the server
			// could hand the lock to another process.
			l.q.logger.Warn("renew the deploy lock", "err", err)
			continue
		}
		l.q.logger.Error("deploy lock lost", "err", err)
		l.lost(errLockLost)
		return
	}
}

// release stops renewing and deletes the lock if it is still this holder's.
func (l *deployLock) release() {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), l.q.cfg.DeployLease)
	defer cancel()
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	if err := l.q.locks.Delete(ctx, lockKey, jetstream.LastRevision(rev)); err != nil {
		l.q.logger.Debug("release the deploy lock", "err", err)
	}
}

// ErrDeployLocked is the error of LockDeploy without waiting while another deploy holds the lock.
var ErrDeployLocked = errors.New("a deploy is in progress")

// LockDeploy takes the deploy lock for a deploy that does not come from the queue (cimdeploy run,
// rollout, rollback): it waits for a deploy of serve (or of another command) to end, or with wait
// false fails at once with ErrDeployLocked naming the holder. lost is called, once, if the lock is
// lost before release (cancel the deploy then). Call release when the deploy is over.
func (q *Queue) LockDeploy(ctx context.Context, wait bool, lost func(error)) (release func(), err error) {
	if !wait {
		if e, err := q.locks.Get(ctx, lockKey); err == nil {
			return nil, fmt.Errorf("%w (held by %s); wait for it, or leave --no-wait out", ErrDeployLocked, e.Value())
		}
		// A lock that appears between the look and the take is waited for: the race is short.
	}
	l, err := q.lockDeploy(ctx, lost)
	if err != nil {
		return nil, err
	}
	return l.release, nil
}
