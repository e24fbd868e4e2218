package checkout_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
)

// historyOrigin is a repository with history: five commits on main with a merge of a side branch,
// a lightweight and an annotated tag, and a tag named like a branch.
//
//	c1 - c2 - c3 ------ m - c5   main
//	       \           /
//	        s1 ------ s2         side
func historyOrigin(t *testing.T) *origin {
	t.Helper()
	o := newOrigin(t)
	o.commit("c1", map[string]string{"flake.nix": "1\n"})
	o.commit("c2", map[string]string{"flake.nix": "2\n"})
	o.git("tag", "v1.1")
	o.git("branch", "side")
	o.commit("c3", map[string]string{"flake.nix": "3\n"})
	o.git("checkout", "-q", "side")
	o.commit("s1", map[string]string{"side.nix": "1\n"})
	o.commit("s2", map[string]string{"side.nix": "2\n"})
	o.git("checkout", "-q", "main")
	o.git("merge", "-q", "--no-ff", "-m", "m", "side")
	o.git("tag", "-a", "-m", "release 1.2", "v1.2")
	o.commit("c5", map[string]string{"flake.nix": "5\n"})
	o.git("tag", "clash", "HEAD~1")
	o.git("branch", "clash", "HEAD~2")
	return o
}

// TestResolveExpressions: each revision as operators type it resolves to the commit git itself
// (git rev-parse in the origin) names, through Resolve and Checkout, from a fresh cache and from a
// shallow clone that has to be deepened.
func TestResolveExpressions(t *testing.T) {
	t.Parallel()
	o := historyOrigin(t)
	short := o.git("rev-parse", "--short=7", "HEAD~2")
	revs := []string{
		"HEAD", "HEAD~1", "HEAD~", "HEAD^", "HEAD~2", "HEAD^^", "HEAD~1^2", "HEAD~1^2~1", "HEAD^0", "HEAD~4",
		"main~3", "main^", "side~1", "v1.2^{}", "v1.2^{commit}", "v1.2~1", "v1.1^{}", "clash^0",
		short, strings.ToUpper(short), short + "~1", o.git("rev-parse", "HEAD~3")[:12], o.git("rev-parse", "HEAD") + "^",
	}
	for _, warm := range []bool{false, true} {
		name := "fresh cache"
		if warm {
			name = "shallow clone"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, _ := newCache(t)
			src := checkout.Source{URL: "file://" + o.dir}
			if warm {
				mustCheckout(t, c, src, "main") // a depth 1 fetch: the ancestors are not in the clone
			}
			for _, rev := range revs {
				want := o.git("rev-parse", "--verify", rev+"^{commit}")
				got, err := c.Resolve(t.Context(), src, rev)
				if err != nil || got != want {
					t.Errorf("Resolve(%q) = %s, %v; want %s", rev, got, err, want)
				}
			}
			// Checkout takes the same revisions and checks out that commit, with no ref.
			for _, rev := range []string{"HEAD~1^2", "v1.2~1", short} {
				ws := mustCheckout(t, c, src, rev)
				if want := o.git("rev-parse", rev+"^{commit}"); ws.Commit != want || ws.Ref != "" {
					t.Errorf("Checkout(%q) = %s %q, want %s and no ref", rev, ws.Commit, ws.Ref, want)
				}
				if got := gitRun(t, ws.Dir, "rev-parse", "HEAD"); got != ws.Commit {
					t.Errorf("workspace of %q at %s, want %s", rev, got, ws.Commit)
				}
			}
		})
	}
}

// TestResolveExpressionNotFound: a revision that goes past the root, names a parent a commit lacks,
// a ref or an abbreviated id the remote does not have, is ErrNotFound naming the revision.
func TestResolveExpressionNotFound(t *testing.T) {
	t.Parallel()
	o := historyOrigin(t)
	c, _ := newCache(t)
	src := checkout.Source{URL: o.dir}
	for _, tt := range []struct{ rev, want string }{
		{"HEAD~5", "root commit"},
		{"main~100000", "root commit"},
		{"HEAD^2", "has 1 parent(s)"},
		{"HEAD~1^3", "has 2 parent(s)"},
		{"nosuch~1", `no branch or tag "nosuch"`},
		{"0000000", "no commit of the branches and tags"},
	} {
		_, err := c.Resolve(t.Context(), src, tt.rev)
		if !errors.Is(err, checkout.ErrNotFound) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.rev) {
			t.Errorf("Resolve(%q) = %v, want ErrNotFound saying %q", tt.rev, err, tt.want)
		}
		if _, err := c.Checkout(t.Context(), src, tt.rev, t.TempDir()); !errors.Is(err, checkout.ErrNotFound) {
			t.Errorf("Checkout(%q) = %v, want ErrNotFound", tt.rev, err)
		}
	}
}

// FuzzValidateRev: whatever ValidateRev accepts is a revision git reads as a commit and nothing more:
// no option, path, reflog, range or search syntax, no control character, suffixes only after a short
// name, braces in the suffixes only as ^{} and ^{commit} (a branch name may hold braces, as in git).
func FuzzValidateRev(f *testing.F) {
	for _, s := range []string{"main", "HEAD~1", "main^2~3", "v1.2^{}", "v1.2^{commit}", "abcdef0", "refs/pull/1/head",
		"main~1:x", "main^{tree}", "@{-1}", "-x", "a..b", "main^!", "refs/heads/a~1", "HEAD@{1}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if checkout.ValidateRev(s) != nil {
			if checkout.IsExpression(s) {
				t.Fatalf("%q is refused but an expression", s)
			}
			return
		}
		suffix := ""
		if i := strings.IndexAny(s, "~^"); i >= 0 {
			suffix = strings.NewReplacer("^{commit}", "", "^{}", "").Replace(s[i:])
		}
		switch {
		case len(s) > 1024, strings.HasPrefix(s, "-"), strings.Contains(s, ".."), strings.Contains(s, "@{"),
			strings.ContainsAny(s, " :?*[\\"), strings.ContainsAny(suffix, "{}"),
			strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			t.Fatalf("ValidateRev accepted %q", s)
		case strings.HasPrefix(s, "refs/") && strings.ContainsAny(s, "~^"):
			t.Fatalf("ValidateRev accepted suffixes on a full ref name: %q", s)
		case strings.ContainsAny(s, "~^") && !checkout.IsExpression(s):
			t.Fatalf("%q has suffixes but is no expression", s)
		}
	})
}
