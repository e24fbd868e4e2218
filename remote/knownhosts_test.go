package remote_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/cimdeploy/cimdeploy/remote"
)

func newHostKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPinHostKey(t *testing.T) {
	t.Parallel()
	old, other, fresh := newHostKey(t), newHostKey(t), newHostKey(t)
	hashed := knownhosts.HashHostname("10.0.0.13")
	for _, tc := range []struct {
		name, addr string
		before     []string
		want       []string // the lines before the pinned one
	}{
		{name: "replaces the stale line", addr: "10.0.0.13:22",
			before: []string{knownhosts.Line([]string{"10.0.0.11"}, other), knownhosts.Line([]string{"10.0.0.13"}, old)},
			want:   []string{knownhosts.Line([]string{"10.0.0.11"}, other)}},
		{name: "takes the name out of a list", addr: "10.0.0.13",
			before: []string{knownhosts.Line([]string{"10.0.0.12", "10.0.0.13"}, old)},
			want:   []string{knownhosts.Line([]string{"10.0.0.12"}, old)}},
		{name: "drops a hashed line of the name", addr: "10.0.0.13:22",
			before: []string{hashed + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(old)))},
			want:   nil},
		{name: "keeps markers, wildcards, comments and other ports", addr: "10.0.0.13:2222",
			before: []string{"# comment", "@revoked 10.0.0.13 " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other))),
				knownhosts.Line([]string{"10.0.0.*"}, other), knownhosts.Line([]string{"10.0.0.13"}, old)},
			want: []string{"# comment", "@revoked 10.0.0.13 " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other))),
				knownhosts.Line([]string{"10.0.0.*"}, other), knownhosts.Line([]string{"10.0.0.13"}, old)}},
		{name: "adds to an empty file", addr: "10.0.0.13", before: nil, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "known_hosts")
			content := strings.Join(tc.before, "\n")
			if content != "" {
				content += "\n"
			}
			if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := remote.PinHostKey(file, tc.addr, fresh); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Join(append(tc.want, knownhosts.Line([]string{knownhosts.Normalize(tc.addr)}, fresh)), "\n") + "\n"
			if string(data) != want {
				t.Errorf("known_hosts:\n%s\nwant:\n%s", data, want)
			}
			if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600 kept", fi.Mode().Perm())
			}
			if entries, _ := os.ReadDir(filepath.Dir(file)); len(entries) != 1 {
				t.Errorf("temp files left: %v", entries)
			}
			check, err := knownhosts.New(file)
			if err != nil {
				t.Fatal(err)
			}
			addr := tc.addr
			if !strings.Contains(addr, ":") {
				addr += ":22"
			}
			host, port, _ := net.SplitHostPort(addr)
			n, _ := strconv.Atoi(port)
			tcp := &net.TCPAddr{IP: net.ParseIP(host), Port: n}
			if err := check(addr, tcp, fresh); err != nil {
				t.Errorf("the pinned key is refused: %v", err)
			}
			if tc.name != "keeps markers, wildcards, comments and other ports" {
				if err := check(addr, tcp, old); err == nil {
					t.Error("the stale key is still accepted")
				}
			}
		})
	}
	if err := remote.PinHostKey(filepath.Join(t.TempDir(), "missing"), "10.0.0.13", fresh); err == nil {
		t.Error("pinning into a missing known_hosts: no error")
	}
}
