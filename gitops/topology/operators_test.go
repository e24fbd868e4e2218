package topology_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// keygen makes a key pair with the real ssh-keygen and returns the public line and the private key.
func keygen(t *testing.T, args ...string) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "id")
	cmd := exec.CommandContext(t.Context(), "ssh-keygen", append([]string{"-q", "-N", "", "-C", "op@example", "-f", path}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen (Debian's openssh-client) %v: %v\n%s", args, err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(pub)), string(priv)
}

func operator(name, role string, keys ...string) string {
	data, _ := json.Marshal(map[string]any{"name": name, "role": role, "ssh_keys": keys})
	return string(data)
}

func TestOperatorsFixtures(t *testing.T) {
	t.Parallel()
	top := must(topology.Fold(allFixtures(t)))
	if got := strings.Join(top.OperatorNames(), ","); got != "alice,deploy,ops" {
		t.Fatalf("operators %s", got)
	}
	if admin, ok := top.DomainAdmin(); !ok || admin != "ops" {
		t.Errorf("domain admin %q %v, want ops", admin, ok)
	}
	if d := top.Operators["deploy"]; d.Role != topology.RoleDeployer || len(d.Keys) != 1 || !strings.HasPrefix(d.Keys[0], "ssh-ed25519 AAAA") {
		t.Errorf("deploy = %+v", d)
	}
}

func TestOperatorKeysNormalised(t *testing.T) {
	t.Parallel()
	pub, _ := keygen(t, "-t", "ed25519")
	fields := strings.Fields(pub)
	// Extra blanks and a trailing newline, as a pasted .pub file has.
	evs := add(fixtures(t)[:9], "OperatorAdded", operator("bob", "admin", "  "+fields[0]+"   "+fields[1]+"  op@example\n"))
	top := must(topology.Fold(evs))
	if got := top.Operators["bob"].Keys; len(got) != 1 || got[0] != pub {
		t.Errorf("keys %q, want %q", got, pub)
	}
}

func TestOperatorValidation(t *testing.T) {
	t.Parallel()
	base := fixtures(t)[:9]
	ed, edPriv := keygen(t, "-t", "ed25519")
	other, _ := keygen(t, "-t", "ed25519")
	rsaSmall, _ := keygen(t, "-t", "rsa", "-b", "1024")
	rsaOK, _ := keygen(t, "-t", "rsa", "-b", "3072")
	for _, tc := range []struct {
		name string
		data []string // OperatorAdded events, in order
		want []string
		not  []string // must not be in the problems (secrets)
	}{
		{name: "upper-case name", data: []string{operator("Bob", "admin", ed)}, want: []string{`data.name: "Bob" is not a user name`}},
		{name: "name too long", data: []string{operator(strings.Repeat("a", 32), "admin", ed)}, want: []string{"is not a user name"}},
		{name: "reserved name", data: []string{operator("root", "admin", ed)}, want: []string{`"root" is an account NixOS or the cluster's services define`}},
		{name: "service account", data: []string{operator("nats", "viewer", ed)}, want: []string{`"nats" is an account`}},
		{name: "unknown role", data: []string{operator("bob", "superuser", ed)}, want: []string{`data.role: "superuser" is not one of admin, viewer, domain-admin, deployer`}},
		{name: "no keys", data: []string{operator("bob", "admin")}, want: []string{"data.ssh_keys: an operator needs at least one SSH public key"}},
		{name: "private key", data: []string{operator("bob", "admin", edPriv)}, want: []string{"data.ssh_keys[0]: is a private key"}, not: []string{strings.Split(edPriv, "\n")[1]}},
		{name: "not a key", data: []string{operator("bob", "admin", "hello world")}, want: []string{"data.ssh_keys[0]: is not an OpenSSH public key"}},
		{name: "command option", data: []string{operator("bob", "admin", `command="/bin/true",no-pty `+ed)}, want: []string{"data.ssh_keys[0]: has authorized_keys options (command, no-pty)"}},
		{name: "two keys in one entry", data: []string{operator("bob", "admin", ed+"\n"+other)}, want: []string{"holds more than one key"}},
		{name: "small RSA key", data: []string{operator("bob", "admin", rsaSmall)}, want: []string{"is a 1024-bit RSA key, under 2048 bits"}},
		{name: "key listed twice", data: []string{operator("bob", "admin", ed, ed)}, want: []string{"data.ssh_keys[1]: the same key is listed twice"}},
		{name: "key listed twice with another comment", data: []string{operator("bob", "admin", ed, strings.Join(strings.Fields(ed)[:2], " ")+" laptop")},
			want: []string{"data.ssh_keys[1]: the same key is listed twice"}},
		{name: "key of another operator", data: []string{operator("bob", "admin", ed), operator("carol", "viewer", other, ed)},
			want: []string{`event 11 (test-11): data.ssh_keys[1]: the key is already operator "bob"'s (event 10 at test-10.json:1)`}},
		{name: "operator added twice", data: []string{operator("bob", "admin", ed), operator("bob", "viewer", other)},
			want: []string{`event 11 (test-11): data.name: operator "bob" was already added by event 10 at test-10.json:1`}},
		{name: "two domain admins", data: []string{operator("bob", "domain-admin", ed), operator("carol", "domain-admin", other)},
			want: []string{`data.role: the domain already has a domain-admin, "bob" (event 10 at test-10.json:1)`}},
		{name: "unknown field", data: []string{`{"name":"bob","role":"admin","ssh_keys":[],"shell":"zsh"}`}, want: []string{`unknown field "shell"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			evs := base
			for _, d := range tc.data {
				evs = add(evs, "OperatorAdded", d)
			}
			_, problems := topology.Fold(evs)
			if len(problems) == 0 {
				t.Fatalf("no problem, want %q", tc.want)
			}
			got := problems.Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("problems do not mention %q:\n%s", w, got)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("problems quote a secret:\n%s", got)
				}
			}
		})
	}
	t.Run("RSA 3072 is fine", func(t *testing.T) {
		t.Parallel()
		must(topology.Fold(add(base, "OperatorAdded", operator("bob", "viewer", rsaOK))))
	})
}

// FuzzParseOperatorKey: whatever the entry holds, ParseOperatorKey does not panic, an accepted key is
// already in its normal form (parsing it again gives it back), and an error is short and never quotes
// the entry (it may be a private key).
//
//	go test ./gitops/topology -run '^$' -fuzz FuzzParseOperatorKey
func FuzzParseOperatorKey(f *testing.F) {
	for _, s := range []string{
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICATKy2qBg7EzYpkcSqJwPdh7FBrJYunkjxl+7+Q/zQr ops@cim.local",
		`command="/bin/true" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICATKy2qBg7EzYpkcSqJwPdh7FBrJYunkjxl+7+Q/zQr`,
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICATKy2qBg7EzYpkcSqJwPdh7FBrJYunkjxl+7+Q/zQr a\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICVXJlw4MsXXScoGwH4Fhql42szEJfc9uIy93lT7JvRy b",
		"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
		"# a comment\n", "", "ssh-rsa AAAA", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICATKy2qBg7EzYpkcSqJwPdh7FBrJYunkjxl+7+Q/zQr \x00\x7f\u202e",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		key, err := topology.ParseOperatorKey(s)
		if err != nil {
			if msg := err.Error(); len(msg) > 512 || (len(s) >= 16 && strings.Contains(msg, s)) {
				t.Fatalf("error quotes the entry or is long (%d bytes): %s", len(msg), msg)
			}
			return
		}
		again, err := topology.ParseOperatorKey(key)
		if err != nil || again != key {
			t.Fatalf("normal form %q parses to %q, %v", key, again, err)
		}
		if strings.ContainsAny(key, "\n\r\x00") {
			t.Fatalf("normal form %q is not one line", key)
		}
	})
}
