package checkout_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
)

func TestSourceValidate(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(key, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		src     checkout.Source
		problem string // "" for valid
	}{
		{name: "local path", src: checkout.Source{URL: "/srv/infra"}},
		{name: "relative path", src: checkout.Source{URL: "infra"}},
		{name: "file URL", src: checkout.Source{URL: "file:///srv/infra"}},
		{name: "https", src: checkout.Source{URL: "https://github.com/o/r.git"}},
		{name: "https with token", src: checkout.Source{URL: "https://github.com/o/r", Token: "tok3n"}},
		{name: "http token on loopback", src: checkout.Source{URL: "http://127.0.0.1:8080/r", Token: "tok3n"}},
		{name: "ssh", src: checkout.Source{URL: "ssh://git@github.com/o/r.git", SSHKeyFile: key}},
		{name: "scp-like", src: checkout.Source{URL: "git@github.com:o/r.git", SSHKeyFile: key}},
		{name: "empty", src: checkout.Source{}, problem: "empty URL"},
		{name: "dash", src: checkout.Source{URL: "-uhack"}, problem: "'-'"},
		{name: "control", src: checkout.Source{URL: "https://github.com/o/r\n"}, problem: "control"},
		{name: "git protocol", src: checkout.Source{URL: "git://github.com/o/r"}, problem: "unsupported scheme"},
		{name: "credentials in URL", src: checkout.Source{URL: "https://u:p@github.com/o/r"}, problem: "user info"},
		{name: "no host", src: checkout.Source{URL: "https:///o/r"}, problem: "no host"},
		{name: "file URL with host", src: checkout.Source{URL: "file://example.org/r"}, problem: "host"},
		{name: "token over http", src: checkout.Source{URL: "http://example.org/r", Token: "tok3n"}, problem: "plain http"},
		{name: "token over ssh", src: checkout.Source{URL: "git@github.com:o/r.git", Token: "tok3n", SSHKeyFile: key}, problem: "token"},
		{name: "token for a path", src: checkout.Source{URL: "/srv/infra", Token: "tok3n"}, problem: "token"},
		{name: "ssh without key", src: checkout.Source{URL: "ssh://git@github.com/o/r"}, problem: "ssh key"},
		{name: "ssh key missing", src: checkout.Source{URL: "ssh://git@github.com/o/r", SSHKeyFile: key + ".missing"}, problem: "no such file"},
		{name: "key for https", src: checkout.Source{URL: "https://github.com/o/r", SSHKeyFile: key}, problem: "only used with ssh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.src.Validate()
			switch {
			case tt.problem == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.problem != "" && (err == nil || !strings.Contains(err.Error(), tt.problem)):
				t.Errorf("Validate() = %v, want an error about %q", err, tt.problem)
			case err != nil && tt.src.Token != "" && strings.Contains(err.Error(), "tok3n"):
				t.Errorf("error shows the token: %v", err)
			}
		})
	}
}

// Spellings of one repository share a clone; different repositories and schemes do not.
func TestCacheKeys(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(key, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &checkout.Cache{Dir: t.TempDir()}
	dir := func(src checkout.Source) string {
		t.Helper()
		d, err := c.RepoDir(src)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(d) != filepath.Join(c.Dir, "repos") || strings.Contains(filepath.Base(d), "github") {
			t.Errorf("clone dir %s is not a hash under the cache", d)
		}
		return d
	}
	same := [][]checkout.Source{
		{{URL: "https://github.com/o/r.git"}, {URL: "https://GitHub.com/o/r"}, {URL: "https://github.com:443/o/r/"}, {URL: "https://github.com/o/r", Token: "x"}},
		{{URL: "git@github.com:o/r.git", SSHKeyFile: key}, {URL: "ssh://git@github.com/o/r", SSHKeyFile: key}, {URL: "ssh://git@github.com:22/o/r.git", SSHKeyFile: key}},
		{{URL: "/srv/infra"}, {URL: "file:///srv/infra"}, {URL: "/srv/../srv/infra/"}},
	}
	seen := map[string]int{}
	for i, group := range same {
		want := dir(group[0])
		for _, src := range group[1:] {
			if got := dir(src); got != want {
				t.Errorf("%s and %s use different clones", group[0].URL, src.URL)
			}
		}
		if j, ok := seen[want]; ok {
			t.Errorf("groups %d and %d share a clone", j, i)
		}
		seen[want] = i
	}
	if dir(checkout.Source{URL: "https://github.com/o/other"}) == dir(checkout.Source{URL: "https://github.com/o/r"}) {
		t.Error("two repositories share a clone")
	}
}

// A Source never prints or logs its token.
func TestSourceHidesToken(t *testing.T) {
	t.Parallel()
	src := checkout.Source{URL: "https://github.com/o/r", Token: "s3cr3t"}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "src", src)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "src", src)
	for _, s := range []string{fmt.Sprint(src), fmt.Sprintf("%v %+v %#v %s", src, src, src, src), logs.String()} {
		if strings.Contains(s, "s3cr3t") {
			t.Errorf("token shown: %s", s)
		}
	}
}
