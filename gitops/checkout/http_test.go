package checkout_test

import (
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
)

const httpBackend = "/usr/lib/git-core/git-http-backend"

// gitHTTP serves the repositories under root with the real git http-backend, refusing any request
// without HTTP basic auth x-access-token:token. It records the credentials of every request.
type gitHTTP struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string // "METHOD path user:password"
}

func newGitHTTP(t *testing.T, root, token string) *gitHTTP {
	t.Helper()
	if _, err := os.Stat(httpBackend); err != nil {
		t.Fatalf("git http-backend is needed (Debian's git package ships it): %v", err)
	}
	backend := &cgi.Handler{
		Path:   httpBackend,
		Env:    append([]string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}, gitEnv...),
		Stderr: io.Discard, // "Not a git repository" for the refused requests
	}
	s := &gitHTTP{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		s.mu.Lock()
		s.requests = append(s.requests, r.Method+" "+r.URL.Path+" "+user+":"+pass)
		s.mu.Unlock()
		if user != "x-access-token" || pass != token {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *gitHTTP) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

func TestHTTPTokenAndShallowFetch(t *testing.T) {
	t.Parallel()
	const token = "ghs_s3cr3tT0kenValue"
	o := newOrigin(t)
	o.commit("first", map[string]string{"flake.nix": "{ }\n", "hosts/a.nix": "a1\n"})
	second := o.commit("second", map[string]string{"hosts/a.nix": "a2\n", "hosts/b.nix": "b\n"})
	root := filepath.Dir(o.dir)
	srv := newGitHTTP(t, root, token)
	url := srv.URL + "/" + filepath.Base(o.dir)

	c, logs := newCache(t)
	src := checkout.Source{URL: url, Token: token}
	if err := src.Validate(); err != nil {
		t.Fatal(err)
	}
	ws := mustCheckout(t, c, src, "main")
	if ws.Commit != second {
		t.Errorf("Commit = %s, want %s", ws.Commit, second)
	}
	wantTree(t, ws.Dir, map[string]string{"flake.nix": "{ }\n", "hosts/a.nix": "a2\n", "hosts/b.nix": "b\n"})
	repoDir, _ := c.RepoDir(src)
	if got := shallowList(t, repoDir); len(got) != 1 || got[0] != second {
		t.Errorf("shallow list over http = %v, want [%s] (depth 1)", got, second)
	}
	if n := gitRun(t, repoDir, "rev-list", "--count", "--all"); n != "1" {
		t.Errorf("the clone holds %s commits, want 1 (depth 1)", n)
	}

	reqs := srv.log()
	if len(reqs) == 0 {
		t.Fatal("no request reached the server")
	}
	for _, r := range reqs {
		if !strings.HasSuffix(r, " x-access-token:"+token) {
			t.Errorf("request without the token as basic auth: %s", r)
		}
	}

	// The next commit fetches over http only what is new, and ancestry deepens the clone.
	third := o.commit("third", map[string]string{"hosts/b.nix": "b2\n"})
	forced, err := checkout.CheckFastForward(t.Context(), c, src, second, third, false)
	if err != nil || forced {
		t.Errorf("CheckFastForward over http = %v, %v", forced, err)
	}
	ws = mustCheckout(t, c, src, "main")
	wantTree(t, ws.Dir, map[string]string{"flake.nix": "{ }\n", "hosts/a.nix": "a2\n", "hosts/b.nix": "b2\n"})

	// Without the token, or with a wrong one, the server refuses; the errors never show a token.
	for _, bad := range []checkout.Source{{URL: url}, {URL: url, Token: "wrong-" + token}} {
		_, err := c.Checkout(t.Context(), bad, "main", t.TempDir())
		if err == nil {
			t.Errorf("checkout with token %q succeeded", bad.Token)
			continue
		}
		if strings.Contains(err.Error(), token) {
			t.Errorf("error shows the token: %v", err)
		}
		if _, err := c.Resolve(t.Context(), bad, "main"); err == nil || strings.Contains(err.Error(), token) {
			t.Errorf("Resolve with token %q = %v", bad.Token, err)
		}
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("logs show the token:\n%s", logs)
	}
	if !strings.Contains(logs.String(), url) {
		t.Errorf("logs do not name the repository:\n%s", logs)
	}
}

// A server that echoes the credentials into its error page does not get them into our errors.
func TestHTTPErrorsRedactToken(t *testing.T) {
	t.Parallel()
	const token = "ghs_echoedT0ken"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pass, _ := r.BasicAuth()
		http.Error(w, "internal error for token "+pass, http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	c, logs := newCache(t)
	src := checkout.Source{URL: srv.URL + "/infra", Token: token}
	_, err := c.Checkout(t.Context(), src, "main", t.TempDir())
	if err == nil {
		t.Fatal("checkout from a failing server succeeded")
	}
	if strings.Contains(err.Error(), token) || strings.Contains(logs.String(), token) {
		t.Errorf("token shown: %v\n%s", err, logs)
	}
}
