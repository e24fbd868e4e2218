package checkout_test

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
)

// gitEnv makes the git CLI ignore the machine's configuration and sign commits as one fixed person.
var gitEnv = []string{
	"GIT_CONFIG_NOSYSTEM=1",
	"GIT_CONFIG_GLOBAL=/dev/null",
	"GIT_AUTHOR_NAME=Ada Lovelace",
	"GIT_AUTHOR_EMAIL=ada@example.org",
	"GIT_COMMITTER_NAME=Ada Lovelace",
	"GIT_COMMITTER_EMAIL=ada@example.org",
}

// gitRun runs git in dir and returns its trimmed standard output.
func gitRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), gitEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// origin is a repository made for a test, with a work tree to commit from.
type origin struct {
	t   *testing.T
	dir string
}

func newOrigin(t *testing.T) *origin {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "infra")
	gitRun(t, t.TempDir(), "init", "-q", "-b", "main", dir)
	return &origin{t: t, dir: dir}
}

// commit writes files (an empty content deletes the file), commits them all and returns the commit id.
func (o *origin) commit(msg string, files map[string]string) string {
	o.t.Helper()
	for name, content := range files {
		p := filepath.Join(o.dir, name)
		if content == "" {
			if err := os.Remove(p); err != nil {
				o.t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			o.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			o.t.Fatal(err)
		}
	}
	gitRun(o.t, o.dir, "add", "-A")
	gitRun(o.t, o.dir, "commit", "-q", "--allow-empty", "-m", msg)
	return o.head()
}

func (o *origin) head() string {
	o.t.Helper()
	return gitRun(o.t, o.dir, "rev-parse", "HEAD")
}

func (o *origin) git(args ...string) string {
	o.t.Helper()
	return gitRun(o.t, o.dir, args...)
}

// readTree returns the files under dir, .git excluded, as path -> content.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func wantTree(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	got := readTree(t, dir)
	if len(got) != len(want) {
		t.Errorf("workspace %s has files %v, want %v", dir, keys(got), keys(want))
	}
	for name, content := range want {
		if got[name] != content {
			t.Errorf("workspace file %s = %q, want %q", name, got[name], content)
		}
	}
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// packs maps each pack of a clone (by .idx path) to its index.
func packs(t *testing.T, repoDir string) map[string]*idxfile.MemoryIndex {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoDir, "objects", "pack", "*.idx"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*idxfile.MemoryIndex{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		idx := idxfile.NewMemoryIndex()
		err = idxfile.NewDecoder(f).Decode(idx)
		f.Close()
		if err != nil {
			t.Fatalf("decode %s: %v", p, err)
		}
		out[p] = idx
	}
	return out
}

func packContains(t *testing.T, idx *idxfile.MemoryIndex, sha string) bool {
	t.Helper()
	ok, err := idx.Contains(plumbing.NewHash(sha))
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// shallowList returns the commits a clone marks shallow.
func shallowList(t *testing.T, repoDir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoDir, "shallow"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// syncBuffer is a log sink safe for the goroutines a test starts.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newCache returns a cache in a fresh directory, logging at debug level into the returned buffer.
func newCache(t *testing.T) (*checkout.Cache, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	return &checkout.Cache{
		Dir:    t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, logs
}

func mustCheckout(t *testing.T, c *checkout.Cache, src checkout.Source, rev string) *checkout.Workspace {
	t.Helper()
	ws, err := c.Checkout(t.Context(), src, rev, t.TempDir())
	if err != nil {
		t.Fatalf("Checkout(%q): %v", rev, err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}
