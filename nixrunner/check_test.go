package nixrunner

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
)

const commitA = "0123456789abcdef0123456789abcdef01234567"

func TestCheckKey(t *testing.T) {
	t.Parallel()
	key := func(commit, lock string, overrides map[string]string) string {
		t.Helper()
		k, err := CheckKey(commit, []byte(lock), overrides)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key(commitA, `{"version":7}`, nil)
	if !regexp.MustCompile(`^[0-9a-f]{104}$`).MatchString(base) || !strings.HasPrefix(base, commitA) {
		t.Errorf("key %q is not <commit><sha256> in hex", base)
	}
	if base != key(commitA, `{"version":7}`, map[string]string{}) {
		t.Error("an empty override map changes the key")
	}
	for name, other := range map[string]string{
		"other commit":   key("1123456789abcdef0123456789abcdef01234567", `{"version":7}`, nil),
		"other lock":     key(commitA, `{"version":8}`, nil),
		"override input": key(commitA, `{"version":7}`, map[string]string{"nixpkgs": "path:/x"}),
		"sha256 commit":  key(commitA+"0123456789abcdef01234567", `{"version":7}`, nil),
	} {
		if other == base {
			t.Errorf("%s: same key %s", name, base)
		}
	}
	for _, bad := range []string{"", "HEAD", "0123456", "0123456789ABCDEF0123456789ABCDEF01234567", commitA + "0"} {
		if _, err := CheckKey(bad, nil, nil); err == nil {
			t.Errorf("CheckKey accepted commit %q", bad)
		}
	}
}

func TestMemoryCheckCache(t *testing.T) {
	t.Parallel()
	var c MemoryCheckCache
	ctx := t.Context()
	if _, ok, err := c.Get(ctx, "k"); ok || err != nil {
		t.Fatalf("Get on empty cache = %v, %v", ok, err)
	}
	lines := []string{"error: boom"}
	if err := c.Put(ctx, "k", Verdict{Passed: false, LastLines: lines}); err != nil {
		t.Fatal(err)
	}
	lines[0] = "changed by the caller"
	v, ok, err := c.Get(ctx, "k")
	if !ok || err != nil || v.Passed || len(v.LastLines) != 1 || v.LastLines[0] != "error: boom" {
		t.Errorf("Get = %+v, %v, %v", v, ok, err)
	}
}

// countingCache is a CheckCache fake: a MemoryCheckCache that counts calls and can be told to fail.
type countingCache struct {
	MemoryCheckCache
	fail bool

	mu       sync.Mutex
	gets     int
	puts     int
	lastSave Verdict
}

var errCacheDown = errors.New("cache down")

func (c *countingCache) Get(ctx context.Context, key string) (Verdict, bool, error) {
	c.mu.Lock()
	c.gets++
	c.mu.Unlock()
	if c.fail {
		return Verdict{}, false, errCacheDown
	}
	return c.MemoryCheckCache.Get(ctx, key)
}

func (c *countingCache) Put(ctx context.Context, key string, v Verdict) error {
	c.mu.Lock()
	c.puts++
	c.lastSave = v
	c.mu.Unlock()
	if c.fail {
		return errCacheDown
	}
	return c.MemoryCheckCache.Put(ctx, key, v)
}

func (c *countingCache) counts() (gets, puts int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets, c.puts
}
