package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cimdeploy/cimdeploy/nixrunner"
)

// Verdict returns the raw verdict cached under key (hex digits chosen by the caller: the
// nixrunner.CheckKey of commit and flake.lock); ok is false on a miss. CheckCache stores and decodes
// nixrunner.Verdict; these two are the bytes underneath. Verdicts expire after Config.MaxAge, so a
// miss is always possible: the caller reruns the check.
func (s *Store) Verdict(ctx context.Context, key string) (verdict []byte, ok bool, err error) {
	if err := checkCacheKey(key); err != nil {
		return nil, false, err
	}
	entry, err := s.checks.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("check %s: %w", key, err)
	}
	return entry.Value(), true, nil
}

// PutVerdict caches a verdict under key; the last Put wins.
func (s *Store) PutVerdict(ctx context.Context, key string, verdict []byte) error {
	if err := checkCacheKey(key); err != nil {
		return err
	}
	if _, err := s.checks.Put(ctx, key, verdict); err != nil {
		return fmt.Errorf("check %s: %w", key, err)
	}
	return nil
}

// CheckCache is the flake check cache of nixrunner (it implements nixrunner.CheckCache) in the
// checks bucket: a nixrunner.Verdict stored as JSON under the nixrunner.CheckKey. It is safe for
// concurrent use. A verdict that no longer decodes (Verdict changed shape) is a miss, not an error,
// so the check runs again and overwrites it.
type CheckCache struct {
	Store *Store
}

var _ nixrunner.CheckCache = CheckCache{}

// Get returns the verdict cached under key; ok is false on a miss.
func (c CheckCache) Get(ctx context.Context, key string) (nixrunner.Verdict, bool, error) {
	raw, ok, err := c.Store.Verdict(ctx, key)
	if err != nil || !ok {
		return nixrunner.Verdict{}, false, err
	}
	var v nixrunner.Verdict
	if err := json.Unmarshal(raw, &v); err != nil {
		c.Store.logger.Warn("check cache: undecodable verdict, treated as a miss", "key", key, "err", err)
		return nixrunner.Verdict{}, false, nil
	}
	return v, true, nil
}

// Put caches v under key; the last Put wins.
func (c CheckCache) Put(ctx context.Context, key string, v nixrunner.Verdict) error {
	raw, err := json.Marshal(v)
	if err == nil {
		raw, _, err = fit(raw, c.Store.payloadLimit())
	}
	if err != nil {
		return fmt.Errorf("check %s: encode: %w", key, err)
	}
	return c.Store.PutVerdict(ctx, key, raw)
}
