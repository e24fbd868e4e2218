//go:build unix

package checkout_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
)

// Another process holding the clone's lock file makes Checkout wait, until its context ends.
func TestLockFileExcludesOtherProcesses(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.commit("first", map[string]string{"a": "1"})
	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	mustCheckout(t, c, src, "main")

	repoDir, _ := c.RepoDir(src)
	f, err := os.OpenFile(strings.TrimSuffix(repoDir, ".git")+".lock", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("lock file: %v", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	parent := t.TempDir()
	if _, err := c.Checkout(ctx, src, "main", parent); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Checkout while another process holds the lock = %v, want a deadline error", err)
	}
	if _, err := c.IsAncestor(ctx, src, strings.Repeat("a", 40), strings.Repeat("b", 40)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("IsAncestor with an ended context = %v, want a deadline error", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	ws, err := c.Checkout(t.Context(), src, "main", parent)
	if err != nil {
		t.Fatalf("Checkout after the lock was released: %v", err)
	}
	ws.Close()
}
