package topology

import (
	"bytes"
	"crypto/rsa"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// Operator roles that OperatorAdded names, with RoleDomainAdmin (accounts.go): an operator with it is an
// admin who also gets the domain's Home Manager environment (a domain has at most one), as a NATS user
// with it has every subject of its account.
const (
	// RoleAdmin logs in as its own user, in the wheel group.
	RoleAdmin = "admin"
	// RoleViewer logs in as its own user, without wheel.
	RoleViewer = "viewer"
	// RoleDeployer is cimdeploy's own key: it logs in as root, the user cimdeploy's SSH connections use.
	RoleDeployer = "deployer"
)

// Roles lists the known roles.
var Roles = []string{RoleAdmin, RoleViewer, RoleDomainAdmin, RoleDeployer}

// Operator is a person (or cimdeploy itself, RoleDeployer) who logs in to every node over SSH.
type Operator struct {
	Role string `json:"role"`
	// Keys are OpenSSH public keys in authorized_keys form ("ssh-ed25519 AAAA... comment"), without
	// options, as ssh.MarshalAuthorizedKey writes them, followed by the key's comment when it has one.
	Keys []string `json:"ssh_keys"`
}

// Limits of OperatorAdded.
const (
	MaxOperatorKeys = 32
	MaxKeyLength    = 8192 // bytes of one authorized_keys line; a 16384-bit RSA key is about 2.8 KB
	MinRSABits      = 2048
)

// reservedUsers are accounts NixOS or the cluster's services define on every node: an operator of the
// same name would take them over.
var reservedUsers = []string{"root", "nobody", "nats", "sshd", "node-exporter", "nats-exporter",
	"systemd-resolve", "systemd-network", "systemd-timesync", "messagebus", "nixbld"}

// userName is a user name every tool accepts: shadow's is_valid_name without the upper-case letters,
// dots and trailing '$' it tolerates, at most 31 bytes (nixpkgs' users-groups.nix aborts from 32).
var userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,30}$`)

type operatorAdded struct {
	Name    string   `json:"name"`
	Role    string   `json:"role"`
	SSHKeys []string `json:"ssh_keys"`
}

// operatorState locates the operators' events for problems found later.
type operatorState struct {
	by map[string]*events.Event
}

func (f *folder) operatorAdded(ev *events.Event) {
	var o operatorAdded
	if !f.decode(ev, &o) {
		return
	}
	if f.operators.by == nil {
		f.operators.by = map[string]*events.Event{}
	}
	if !f.check(ev, "data.name", checkUserName(o.Name)) {
		return
	}
	f.aggregate(ev, "data.name", o.Name, "operator")
	if by, dup := f.operators.by[o.Name]; dup {
		f.problem(ev, "data.name", "operator %s was already added by event %d at %s", q(o.Name), by.Sequence, by.Source)
		return
	}
	ok := f.check(ev, "data.role", checkOneOf(o.Role, Roles...))
	if o.Role == RoleDomainAdmin {
		for name, by := range f.operators.by {
			if f.t.Operators[name].Role == RoleDomainAdmin {
				f.problem(ev, "data.role", "the domain already has a domain-admin, %s (event %d at %s)", q(name), by.Sequence, by.Source)
				ok = false
			}
		}
	}
	keys, keysOK := f.operatorKeys(ev, o.SSHKeys)
	if !ok || !keysOK {
		return
	}
	if f.t.Operators == nil {
		f.t.Operators = map[string]Operator{}
	}
	f.t.Operators[o.Name] = Operator{Role: o.Role, Keys: keys}
	f.operators.by[o.Name] = ev
}

// operatorKeys checks and normalises the keys of an OperatorAdded event. A key may belong to one operator
// only: the logs of sshd name the key, and a shared one would not say who logged in.
func (f *folder) operatorKeys(ev *events.Event, raw []string) ([]string, bool) {
	switch {
	case len(raw) == 0:
		f.problem(ev, "data.ssh_keys", "an operator needs at least one SSH public key")
		return nil, false
	case len(raw) > MaxOperatorKeys:
		f.problem(ev, "data.ssh_keys", "%d keys, more than %d", len(raw), MaxOperatorKeys)
		return nil, false
	}
	ok := true
	keys := make([]string, 0, len(raw))
	for i, s := range raw {
		field := fmt.Sprintf("data.ssh_keys[%d]", i)
		key, err := ParseOperatorKey(s)
		if err != nil {
			f.problem(ev, field, "%s", err)
			ok = false
			continue
		}
		if slices.ContainsFunc(keys, func(k string) bool { return sameKey(k, key) }) {
			f.problem(ev, field, "the same key is listed twice")
			ok = false
			continue
		}
		for name, op := range f.t.Operators {
			if slices.ContainsFunc(op.Keys, func(k string) bool { return sameKey(k, key) }) {
				f.problem(ev, field, "the key is already operator %s's (event %d at %s)", q(name), f.operators.by[name].Sequence, f.operators.by[name].Source)
				ok = false
			}
		}
		keys = append(keys, key)
	}
	return keys, ok
}

// sameKey compares two normalised keys without their comments.
func sameKey(a, b string) bool {
	fa, fb := strings.Fields(a), strings.Fields(b)
	return len(fa) >= 2 && len(fb) >= 2 && fa[0] == fb[0] && fa[1] == fb[1]
}

// ParseOperatorKey checks one authorized_keys line with golang.org/x/crypto/ssh and returns it
// normalised: "TYPE BASE64 [COMMENT]". It refuses private keys, several keys in one string, DSA keys
// (OpenSSH has disabled them since 7.0), RSA keys under MinRSABits and any option (command=, from=,
// no-pty, ...): options restrict or redirect a login, and an operator's key is a plain login, the same
// on every node; a restricted key is a different kind of access, for a different event. Errors never
// quote the key: a private key pasted by mistake must not reach a log.
func ParseOperatorKey(s string) (string, error) {
	if len(s) > MaxKeyLength {
		return "", fmt.Errorf("is %d bytes long, more than %d", len(s), MaxKeyLength)
	}
	if strings.Contains(s, "PRIVATE KEY") {
		return "", fmt.Errorf("is a private key: give its public half (the .pub file); the private key must be replaced, it has been published")
	}
	pk, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	switch {
	case err != nil:
		return "", fmt.Errorf("is not an OpenSSH public key (%v)", err)
	case len(bytes.TrimSpace(rest)) > 0:
		return "", fmt.Errorf("holds more than one key: one key per entry")
	case len(options) > 0:
		names := make([]string, len(options))
		for i, o := range options {
			names[i], _, _ = strings.Cut(o, "=")
		}
		sort.Strings(names)
		return "", fmt.Errorf("has authorized_keys options (%s): an operator's key is a plain login on every node", strings.Join(names, ", "))
	case pk.Type() == ssh.KeyAlgoDSA:
		return "", fmt.Errorf("is a DSA key, which OpenSSH refuses since 7.0: use ed25519")
	}
	if ck, ok := pk.(ssh.CryptoPublicKey); ok {
		if r, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && r.N.BitLen() < MinRSABits {
			return "", fmt.Errorf("is a %d-bit RSA key, under %d bits", r.N.BitLen(), MinRSABits)
		}
	}
	out := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
	if comment != "" && checkText(comment, 256) == nil {
		out += " " + comment
	}
	return out, nil
}

func checkUserName(s string) error {
	switch {
	case !userName.MatchString(s):
		return fmt.Errorf("%s is not a user name (a lower-case letter or '_', then lower-case letters, digits, '_' and '-', at most 31)", q(s))
	case slices.Contains(reservedUsers, s):
		return fmt.Errorf("%s is an account NixOS or the cluster's services define", q(s))
	}
	return nil
}

// OperatorNames returns the operators' names sorted.
func (t *Topology) OperatorNames() []string {
	names := make([]string, 0, len(t.Operators))
	for name := range t.Operators {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// DomainAdmin returns the operator with RoleDomainAdmin, if there is one.
func (t *Topology) DomainAdmin() (string, bool) {
	for _, name := range t.OperatorNames() {
		if t.Operators[name].Role == RoleDomainAdmin {
			return name, true
		}
	}
	return "", false
}
