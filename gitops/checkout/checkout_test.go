package checkout_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
)

func TestCheckoutBranchCommitTag(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	first := o.commit("first", map[string]string{"flake.nix": "{ }\n", "hosts/a.nix": "a1\n"})
	o.git("tag", "v1")
	o.git("tag", "-a", "-m", "release one", "v1-annotated")
	second := o.commit("second\n\nwith a body", map[string]string{"hosts/a.nix": "a2\n", "hosts/b.nix": "b\n"})
	firstTree := map[string]string{"flake.nix": "{ }\n", "hosts/a.nix": "a1\n"}
	secondTree := map[string]string{"flake.nix": "{ }\n", "hosts/a.nix": "a2\n", "hosts/b.nix": "b\n"}

	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	tests := []struct {
		name, rev, want, ref string
		tree                 map[string]string
	}{
		{name: "branch", rev: "main", want: second, ref: "refs/heads/main", tree: secondTree},
		{name: "full branch ref", rev: "refs/heads/main", want: second, ref: "refs/heads/main", tree: secondTree},
		{name: "tip commit", rev: second, want: second, tree: secondTree},
		{name: "older commit", rev: first, want: first, tree: firstTree},
		{name: "upper-case commit", rev: strings.ToUpper(first), want: first, tree: firstTree},
		{name: "tag", rev: "refs/tags/v1", want: first, ref: "refs/tags/v1", tree: firstTree},
		{name: "annotated tag", rev: "refs/tags/v1-annotated", want: first, ref: "refs/tags/v1-annotated", tree: firstTree},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := mustCheckout(t, c, src, tt.rev)
			if ws.Commit != tt.want || ws.Ref != tt.ref {
				t.Errorf("Commit, Ref = %s, %q; want %s, %q", ws.Commit, ws.Ref, tt.want, tt.ref)
			}
			wantTree(t, ws.Dir, tt.tree)
			if got := gitRun(t, ws.Dir, "rev-parse", "HEAD"); got != tt.want {
				t.Errorf("workspace HEAD = %s, want %s", got, tt.want)
			}
			if st := gitRun(t, ws.Dir, "status", "--porcelain"); st != "" {
				t.Errorf("workspace not clean:\n%s", st)
			}
		})
	}

	ws := mustCheckout(t, c, src, "main")
	if ws.Message != "second\n\nwith a body\n" || ws.Author != "Ada Lovelace <ada@example.org>" {
		t.Errorf("Message, Author = %q, %q", ws.Message, ws.Author)
	}
	if d := time.Since(ws.Time); d < 0 || d > time.Hour {
		t.Errorf("Time = %v, want about now", ws.Time)
	}
	if err := ws.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ws.Dir); !os.IsNotExist(err) {
		t.Errorf("workspace %s still there after Close: %v", ws.Dir, err)
	}
	if err := ws.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	first := o.commit("first", map[string]string{"a": "1"})
	o.git("tag", "-a", "-m", "one", "v1")
	second := o.commit("second", map[string]string{"a": "2"})
	o.git("update-ref", "refs/pull/7/head", first)

	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	for rev, want := range map[string]string{
		"main":                 second,
		"refs/heads/main":      second,
		"refs/tags/v1":         first, // peeled
		"refs/pull/7/head":     first,
		strings.ToUpper(first): first,
	} {
		got, err := c.Resolve(t.Context(), src, rev)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %s", rev, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "repos")); !os.IsNotExist(err) {
		t.Errorf("Resolve touched the cache: %v", err)
	}
	_, err := c.Resolve(t.Context(), src, "nope")
	if !errors.Is(err, checkout.ErrNotFound) || !strings.Contains(err.Error(), "refs/heads/nope") {
		t.Errorf("Resolve(nope) = %v, want ErrNotFound naming refs/heads/nope", err)
	}
}

func TestCheckoutPullRequestRef(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.commit("first", map[string]string{"a": "1"})
	o.git("checkout", "-q", "-b", "feature")
	pr := o.commit("feature", map[string]string{"a": "pr"})
	o.git("checkout", "-q", "main")
	o.git("update-ref", "refs/pull/12/head", pr)
	o.git("branch", "-D", "feature")

	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	ws := mustCheckout(t, c, src, "refs/pull/12/head")
	if ws.Commit != pr {
		t.Errorf("Commit = %s, want %s", ws.Commit, pr)
	}
	wantTree(t, ws.Dir, map[string]string{"a": "pr"})
	// Only a pull request ref reaches it: by commit id it is found as that ref's tip.
	c2, _ := newCache(t)
	ws = mustCheckout(t, c2, src, pr)
	wantTree(t, ws.Dir, map[string]string{"a": "pr"})
}

// A second commit on the branch is fetched into the same clone, and the new pack holds only the new
// commit's objects: from a full clone (the first commit was a root) and from a shallow one.
func TestSecondCommitFetchesOnlyNewObjects(t *testing.T) {
	t.Parallel()
	for _, shallow := range []bool{false, true} {
		t.Run(fmt.Sprintf("shallow=%v", shallow), func(t *testing.T) {
			t.Parallel()
			o := newOrigin(t)
			if shallow {
				o.commit("root", map[string]string{"old": "history"})
			}
			files := map[string]string{"flake.nix": "{ }\n", "old": ""}
			if !shallow {
				delete(files, "old")
			}
			for i := range 20 {
				files[filepath.Join("hosts", string(rune('a'+i))+".nix")] = strings.Repeat("x", i+1)
			}
			first := o.commit("first", files)

			c, logs := newCache(t)
			src := checkout.Source{URL: o.dir}
			mustCheckout(t, c, src, "main")
			repoDir, err := c.RepoDir(src)
			if err != nil {
				t.Fatal(err)
			}
			before := packs(t, repoDir)
			if len(before) != 1 {
				t.Fatalf("after the first checkout the clone has %d packs, want 1", len(before))
			}
			for _, idx := range before {
				// The commit, the root and hosts trees, 21 blobs; no history.
				if n, _ := idx.Count(); n != 24 {
					t.Errorf("the first fetch brought %d objects, want 24", n)
				}
			}
			if got := shallowList(t, repoDir); (len(got) == 1) != shallow {
				t.Errorf("clone marks %v shallow", got)
			}

			second := o.commit("second", map[string]string{"hosts/a.nix": "changed\n"})
			ws := mustCheckout(t, c, src, "main")
			if ws.Commit != second {
				t.Fatalf("Commit = %s, want %s", ws.Commit, second)
			}
			if again, _ := c.RepoDir(src); again != repoDir {
				t.Errorf("second checkout used clone %s, want %s", again, repoDir)
			}
			wantTree(t, ws.Dir, readTree(t, o.dir))
			after := packs(t, repoDir)
			if len(after) != 2 {
				t.Fatalf("after the second checkout the clone has %d packs, want 2", len(after))
			}
			for p, idx := range after {
				if _, old := before[p]; old {
					continue
				}
				// The new commit, the root tree, the hosts tree and the changed blob.
				if n, _ := idx.Count(); n != 4 {
					t.Errorf("the second fetch brought %d objects, want 4", n)
				}
				if packContains(t, idx, first) {
					t.Errorf("the second fetch brought the first commit again")
				}
			}
			if !strings.Contains(logs.String(), "fetched") {
				t.Errorf("no fetch logged:\n%s", logs)
			}

			// Nothing new: no fetch at all.
			mustCheckout(t, c, src, "main")
			if n := len(packs(t, repoDir)); n != 2 {
				t.Errorf("a checkout of an unchanged branch left %d packs, want 2", n)
			}
		})
	}
}

// The first fetch is shallow (git-upload-pack supports it) and later IsAncestor deepens the clone.
func TestShallowCloneDeepensForAncestry(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	root := o.commit("root", map[string]string{"a": "0"})
	first := o.commit("first", map[string]string{"a": "1"})
	second := o.commit("second", map[string]string{"a": "2"})

	c, logs := newCache(t)
	src := checkout.Source{URL: o.dir}
	mustCheckout(t, c, src, "main")
	repoDir, _ := c.RepoDir(src)
	if got := shallowList(t, repoDir); len(got) != 1 || got[0] != second {
		t.Fatalf("shallow list after a depth-1 fetch = %v, want [%s]", got, second)
	}
	third := o.commit("third", map[string]string{"a": "3"})
	fourth := o.commit("fourth", map[string]string{"a": "4"})

	// The incremental fetch of fourth brings third too; second names first as its parent. No
	// deepening needed for either.
	for _, a := range []string{second, first} {
		ok, err := c.IsAncestor(t.Context(), src, a, fourth)
		if err != nil || !ok {
			t.Fatalf("IsAncestor(%.7s, fourth) = %v, %v; want true", a, ok, err)
		}
	}
	if got := shallowList(t, repoDir); len(got) != 1 || got[0] != second {
		t.Errorf("shallow list after an incremental fetch = %v, want [%s]", got, second)
	}
	if strings.Contains(logs.String(), "deepening") {
		t.Errorf("deepened too early:\n%s", logs)
	}
	// root lies beyond the shallow edge: the clone is deepened.
	ok, err := c.IsAncestor(t.Context(), src, root, fourth)
	if err != nil || !ok {
		t.Fatalf("IsAncestor(root, fourth) = %v, %v; want true", ok, err)
	}
	if got := shallowList(t, repoDir); len(got) != 0 {
		t.Errorf("shallow list after deepening = %v, want none", got)
	}
	if !strings.Contains(logs.String(), "deepening") {
		t.Errorf("no deepening logged:\n%s", logs)
	}
	for _, tt := range []struct {
		a, d string
		want bool
	}{
		{a: first, d: fourth, want: true},
		{a: third, d: third, want: true},
		{a: fourth, d: first, want: false},
		{a: strings.Repeat("0", 40), d: fourth, want: false},
	} {
		ok, err := c.IsAncestor(t.Context(), src, tt.a, tt.d)
		if err != nil || ok != tt.want {
			t.Errorf("IsAncestor(%.7s, %.7s) = %v, %v; want %v", tt.a, tt.d, ok, err, tt.want)
		}
	}
	// The clone is full now, so the next fetch is too.
	o.commit("fifth", map[string]string{"a": "5"})
	mustCheckout(t, c, src, "main")
	if got := shallowList(t, repoDir); len(got) != 0 {
		t.Errorf("shallow list after a fetch into a full clone = %v, want none", got)
	}

	if _, err := c.IsAncestor(t.Context(), src, "main", fourth); !isRevError(err, "main") {
		t.Errorf("IsAncestor with a branch name = %v, want a *RevError", err)
	}
}

func TestForcePush(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.commit("first", map[string]string{"a": "1"})
	deployed := o.commit("second", map[string]string{"a": "2"})

	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	mustCheckout(t, c, src, "main")

	ff := o.commit("third", map[string]string{"a": "3"})
	forced, err := checkout.CheckFastForward(t.Context(), c, src, deployed, ff, false)
	if err != nil || forced {
		t.Fatalf("CheckFastForward of a fast-forward = %v, %v", forced, err)
	}
	forced, err = checkout.CheckFastForward(t.Context(), c, src, "", ff, false)
	if err != nil || forced {
		t.Fatalf("CheckFastForward of a first deployment = %v, %v", forced, err)
	}

	// Rewrite history: main becomes a new root commit.
	o.git("checkout", "-q", "--orphan", "rewritten")
	rewritten := o.commit("rewritten", map[string]string{"a": "new"})
	o.git("branch", "-f", "main", rewritten)
	o.git("checkout", "-q", "main")
	o.git("branch", "-D", "rewritten")

	head, err := c.Resolve(t.Context(), src, "main")
	if err != nil || head != rewritten {
		t.Fatalf("Resolve(main) = %s, %v; want %s", head, err, rewritten)
	}
	forced, err = checkout.CheckFastForward(t.Context(), c, src, deployed, head, false)
	var fpe *checkout.ForcePushError
	if !errors.As(err, &fpe) || !forced {
		t.Fatalf("CheckFastForward after a force push = %v, %v; want a *ForcePushError", forced, err)
	}
	if fpe.Last != deployed || fpe.New != rewritten {
		t.Errorf("ForcePushError = %+v", fpe)
	}
	if !strings.Contains(err.Error(), deployed) || !strings.Contains(err.Error(), rewritten) {
		t.Errorf("error does not name both commits: %v", err)
	}
	forced, err = checkout.CheckFastForward(t.Context(), c, src, deployed, head, true)
	if err != nil || !forced {
		t.Errorf("CheckFastForward with force allowed = %v, %v; want true, nil", forced, err)
	}
	ws := mustCheckout(t, c, src, "main")
	wantTree(t, ws.Dir, map[string]string{"a": "new"})
}

func TestUnknownBranchAndCommit(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.commit("first", map[string]string{"a": "1"})
	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	parent := t.TempDir()
	for _, rev := range []string{"nope", "refs/tags/nope", "refs/pull/1/head", strings.Repeat("ab", 20)} {
		ws, err := c.Checkout(t.Context(), src, rev, parent)
		if !errors.Is(err, checkout.ErrNotFound) {
			t.Errorf("Checkout(%q) = %v, %v; want ErrNotFound", rev, ws, err)
			continue
		}
		if name := strings.TrimPrefix(rev, "refs/"); !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), o.dir) {
			t.Errorf("Checkout(%q) error does not name the revision and the repository: %v", rev, err)
		}
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("failed checkouts left %d entries in the parent", len(entries))
	}
	_, err := c.Checkout(t.Context(), checkout.Source{URL: filepath.Join(t.TempDir(), "missing")}, "main", parent)
	if err == nil {
		t.Error("Checkout of a missing repository succeeded")
	}
}

func isRevError(err error, rev string) bool {
	var re *checkout.RevError
	return errors.As(err, &re) && re.Rev == rev
}

func TestBadRevisions(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.commit("first", map[string]string{"a": "1"})
	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	tests := []struct {
		name, rev, reason string
	}{
		{name: "empty", rev: "", reason: "empty"},
		{name: "parent dir", rev: "../x", reason: "'..'"},
		{name: "leading dash", rev: "-x", reason: "'-'"},
		{name: "double dot", rev: "a..b", reason: "'..'"},
		{name: "lock suffix", rev: "x.lock", reason: ".lock"},
		{name: "reflog", rev: "x@{1}", reason: "@{"},
		{name: "newline", rev: "main\nx", reason: "control character"},
		{name: "nul", rev: "ma\x00in", reason: "control character"},
		{name: "tab", rev: "ma\tin", reason: "control character"},
		{name: "del", rev: "ma\x7fin", reason: "control character"},
		{name: "41 hex", rev: strings.Repeat("a", 41), reason: "41 hex digits"},
		{name: "sha256", rev: strings.Repeat("a", 64), reason: "SHA-256"},
		{name: "non-hex 40", rev: strings.Repeat("a", 39) + "g", reason: "not a hex digit"},
		{name: "colon", rev: "a:b", reason: "':'"},
		{name: "question", rev: "a?", reason: "'?'"},
		{name: "star", rev: "a*", reason: "'*'"},
		{name: "bracket", rev: "a[b", reason: "'['"},
		{name: "backslash", rev: `a\b`, reason: `'\\'`},
		{name: "space", rev: "a b", reason: "' '"},
		{name: "trailing slash", rev: "a/", reason: "'/'"},
		{name: "double slash", rev: "a//b", reason: "'//'"},
		{name: "trailing dot", rev: "a.", reason: "'.'"},
		{name: "dot component", rev: "a/.b", reason: "begin with '.'"},
		{name: "at", rev: "@", reason: "not @"},
		{name: "other namespace", rev: "refs/remotes/origin/main", reason: "only refs/heads/"},
		{name: "bad pull ref", rev: "refs/pull/x/head", reason: "pull request"},
		{name: "bare heads", rev: "refs/heads/", reason: "missing name"},
		// what git takes for a commit: only the suffixes that name a commit, bounded, after a sound base
		{name: "suffix on a full ref", rev: "refs/heads/main~1", reason: "'~'"},
		{name: "suffix without base", rev: "~1", reason: "needs a branch"},
		{name: "path after suffix", rev: "main~1:flake.nix", reason: "':'"},
		{name: "tree", rev: "main^{tree}", reason: "^{tree}"},
		{name: "search", rev: "main^{/fix}", reason: "only ^{} and ^{commit}"},
		{name: "unclosed peel", rev: "main^{commit", reason: "unclosed"},
		{name: "range", rev: "main^!", reason: "'!'"},
		{name: "reflog with suffix", rev: "main@{1}~1", reason: "@{"},
		{name: "at with suffix", rev: "@~1", reason: "not @"},
		{name: "dash with suffix", rev: "-main~1", reason: "'-'"},
		{name: "huge count", rev: "main~1000000", reason: "at most 100000"},
		{name: "huge count digits", rev: "main~99999999999999999999", reason: "at most 100000"},
		{name: "many suffixes", rev: "main" + strings.Repeat("^", 17), reason: "more than 16 suffixes"},
		{name: "41 hex with suffix", rev: strings.Repeat("a", 41) + "~1", reason: "41 hex digits"},
		{name: "bad name with suffix", rev: "a..b~1", reason: "'..'"},
		{name: "long", rev: strings.Repeat("a/", 600), reason: "longer than 1024"},
	}
	parent := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkout.ValidateRev(tt.rev)
			if !isRevError(err, tt.rev) {
				t.Fatalf("ValidateRev(%q) = %v, want a *RevError", tt.rev, err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("ValidateRev(%q) = %q, want the reason to mention %q", tt.rev, err, tt.reason)
			}
			if tt.rev != "" && !strings.Contains(err.Error(), strings.Trim(strconv.Quote(tt.rev), `"`)) {
				t.Errorf("error %q does not name the revision", err)
			}
			if _, err := c.Checkout(t.Context(), src, tt.rev, parent); !isRevError(err, tt.rev) {
				t.Errorf("Checkout(%q) = %v, want a *RevError", tt.rev, err)
			}
			if _, err := c.Resolve(t.Context(), src, tt.rev); !isRevError(err, tt.rev) {
				t.Errorf("Resolve(%q) = %v, want a *RevError", tt.rev, err)
			}
		})
	}
	// Nothing touched git: no clone was made.
	if _, err := os.Stat(filepath.Join(c.Dir, "repos")); !os.IsNotExist(err) {
		t.Errorf("a bad revision reached the cache: %v", err)
	}

	for _, rev := range []string{"main", "release/1.2", "cafe", "feature/x-y_z", "refs/heads/main", "refs/tags/v1.0",
		"refs/pull/12/head", "refs/pull/12/merge", strings.Repeat("a", 40), strings.Repeat("A", 40), "deadbeef-branch",
		"HEAD", "HEAD~1", "HEAD~", "main^", "main^2", "main~2^2~1", "v1.2^{}", "v1.2^{commit}", "abcdef0", "ABCDEF0~3",
		strings.Repeat("a", 39), strings.Repeat("a", 40) + "^"} {
		if err := checkout.ValidateRev(rev); err != nil {
			t.Errorf("ValidateRev(%q) = %v, want nil", rev, err)
		}
	}
}

func TestLocalPathAndFileURL(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	head := o.commit("first", map[string]string{"a": "1"})
	c, _ := newCache(t)
	var dirs []string
	for _, url := range []string{o.dir, "file://" + o.dir, o.dir + "/", "file://" + o.dir + "/.git"} {
		src := checkout.Source{URL: url}
		ws := mustCheckout(t, c, src, "main")
		if ws.Commit != head {
			t.Errorf("%s: Commit = %s, want %s", url, ws.Commit, head)
		}
		wantTree(t, ws.Dir, map[string]string{"a": "1"})
		dir, err := c.RepoDir(src)
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	if dirs[0] != dirs[1] || dirs[0] != dirs[2] {
		t.Errorf("a path and its file:// URL use different clones: %v", dirs)
	}
	// The relative form works as well.
	rel, err := filepath.Rel(mustGetwd(t), o.dir)
	if err != nil {
		t.Fatal(err)
	}
	if dir, _ := c.RepoDir(checkout.Source{URL: rel}); dir != dirs[0] {
		t.Errorf("relative path %s uses clone %s, want %s", rel, dir, dirs[0])
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// Checkouts of one repository from many goroutines and from two Caches sharing a directory (as two
// processes would, through the lock file) are safe.
func TestConcurrentCheckouts(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	first := o.commit("first", map[string]string{"a": "1"})
	second := o.commit("second", map[string]string{"a": "2", "b": "b"})

	dir := t.TempDir()
	caches := []*checkout.Cache{{Dir: dir}, {Dir: dir}}
	src := checkout.Source{URL: o.dir}
	parent := t.TempDir()
	revs := []struct {
		rev  string
		tree map[string]string
	}{
		{rev: "main", tree: map[string]string{"a": "2", "b": "b"}},
		{rev: first, tree: map[string]string{"a": "1"}},
		{rev: second, tree: map[string]string{"a": "2", "b": "b"}},
	}
	var wg sync.WaitGroup
	wss := make([]*checkout.Workspace, 12)
	errs := make([]error, len(wss))
	for i := range wss {
		wg.Go(func() {
			wss[i], errs[i] = caches[i%2].Checkout(t.Context(), src, revs[i%3].rev, parent)
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, ws := range wss {
		if errs[i] != nil {
			t.Errorf("checkout %d (%s): %v", i, revs[i%3].rev, errs[i])
			continue
		}
		if seen[ws.Dir] {
			t.Errorf("two checkouts share %s", ws.Dir)
		}
		seen[ws.Dir] = true
		wantTree(t, ws.Dir, revs[i%3].tree)
	}
	for _, ws := range wss {
		if ws != nil {
			if err := ws.Close(); err != nil {
				t.Error(err)
			}
		}
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("%d workspaces left after Close", len(entries))
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.commit("first", map[string]string{"a": "1"})
	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	parent := t.TempDir()
	stale, err := c.Checkout(t.Context(), src, "main", parent)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := c.Checkout(t.Context(), src, "main", parent)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(stale.Dir, ".git", "cimdeploy-workspace"), old, old); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(parent, "not-a-workspace")
	if err := os.Mkdir(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(foreign, old, old); err != nil {
		t.Fatal(err)
	}

	removed, err := c.Prune(t.Context(), parent, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != stale.Dir {
		t.Errorf("Prune removed %v, want [%s]", removed, stale.Dir)
	}
	for dir, want := range map[string]bool{stale.Dir: false, fresh.Dir: true, foreign: true} {
		if _, err := os.Stat(dir); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", dir, err == nil, want)
		}
	}
	if removed, err := c.Prune(t.Context(), filepath.Join(parent, "missing"), time.Hour); err != nil || len(removed) != 0 {
		t.Errorf("Prune of a missing parent = %v, %v", removed, err)
	}
}

func TestWorkspaceKeepsModesAndSymlinks(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.commit("first", map[string]string{"bin/run": "#!/bin/sh\n", "data": "d"})
	if err := os.Chmod(filepath.Join(o.dir, "bin/run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("data", filepath.Join(o.dir, "link")); err != nil {
		t.Fatal(err)
	}
	o.commit("modes", nil)
	c, _ := newCache(t)
	ws := mustCheckout(t, c, checkout.Source{URL: o.dir}, "main")
	fi, err := os.Stat(filepath.Join(ws.Dir, "bin/run"))
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("bin/run is not executable: %v %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(ws.Dir, "link")); err != nil || target != "data" {
		t.Errorf("link = %q, %v; want a symlink to data", target, err)
	}
	// git agrees the tree is clean and knows only this commit.
	if st := gitRun(t, ws.Dir, "status", "--porcelain"); st != "" {
		t.Errorf("workspace not clean:\n%s", st)
	}
	if n := gitRun(t, ws.Dir, "rev-list", "--count", "HEAD"); n != "1" {
		t.Errorf("workspace history has %s commits, want 1 (shallow)", n)
	}
	if err := exec.CommandContext(t.Context(), "git", "-C", ws.Dir, "fsck", "--no-progress").Run(); err != nil {
		t.Errorf("git fsck in the workspace: %v", err)
	}
}

// A commit that is no ref's tip, asked for from a shallow clone, is found by deepening the clone.
func TestCheckoutOldCommitFromShallowClone(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	first := o.commit("first", map[string]string{"a": "1"})
	o.commit("second", map[string]string{"a": "2"})
	o.commit("third", map[string]string{"a": "3"})
	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	mustCheckout(t, c, src, "main")
	repoDir, _ := c.RepoDir(src)
	if len(shallowList(t, repoDir)) != 1 {
		t.Fatalf("clone not shallow after the first checkout: %v", shallowList(t, repoDir))
	}
	ws := mustCheckout(t, c, src, first)
	wantTree(t, ws.Dir, map[string]string{"a": "1"})
	if got := shallowList(t, repoDir); len(got) != 0 {
		t.Errorf("shallow list = %v, want none", got)
	}
}

// A remote that allows any reachable commit in a want (GitHub does) gets asked for just that commit.
func TestCheckoutCommitByID(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.git("config", "uploadpack.allowReachableSHA1InWant", "true")
	o.commit("first", map[string]string{"a": "1"})
	second := o.commit("second", map[string]string{"a": "2"})
	o.commit("third", map[string]string{"a": "3"})
	o.git("branch", "other")
	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	ws := mustCheckout(t, c, src, second)
	wantTree(t, ws.Dir, map[string]string{"a": "2"})
	repoDir, _ := c.RepoDir(src)
	if got := shallowList(t, repoDir); len(got) != 1 || got[0] != second {
		t.Errorf("shallow list = %v, want just %s", got, second)
	}
	if refs := gitRun(t, repoDir, "for-each-ref", "--format=%(refname)"); refs != "refs/cimdeploy/commits/"+second {
		t.Errorf("clone refs = %q, want only the fetched commit's", refs)
	}
}

// An incremental fetch into a shallow clone can come without objects the remote thinks the clone has:
// here a merge brings back a blob last seen below the shallow edge. The clone is deepened.
func TestIncompleteTreeDeepens(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.commit("root", map[string]string{"x": "old\n", "y": "y0\n"})
	o.git("branch", "side")
	o.commit("main changes x", map[string]string{"x": "new\n"})

	c, logs := newCache(t)
	src := checkout.Source{URL: o.dir}
	mustCheckout(t, c, src, "main")

	o.git("checkout", "-q", "side")
	o.commit("side changes y", map[string]string{"y": "side\n"})
	o.git("checkout", "-q", "main")
	o.git("merge", "-q", "--no-commit", "side")
	merged := o.commit("merge side, x back to old", map[string]string{"x": "old\n"})

	ws := mustCheckout(t, c, src, "main")
	if ws.Commit != merged {
		t.Errorf("Commit = %s, want %s", ws.Commit, merged)
	}
	wantTree(t, ws.Dir, map[string]string{"x": "old\n", "y": "side\n"})
	if !strings.Contains(logs.String(), "deepening") {
		t.Errorf("the merge was fetched without deepening; the test no longer covers the incomplete tree:\n%s", logs)
	}
}
