package topology

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// SystemAccount is the name of the NATS system account the projection defines (system_account).
const SystemAccount = "SYS"

// The roles a domain user may have without a DomainPermissionsSet: each has default permissions
// (DefaultPermissions). Any other role is a custom one, which needs a DomainPermissionsSet for it.
const (
	RoleDomainAdmin   = "domain-admin"
	RoleDomainService = "domain-service"
	RoleEventStore    = "event-store"
)

// Kinds of exports and imports between domain accounts.
const (
	ExportStream  = "stream"
	ExportService = "service"
)

// MaxSubjectLength bounds a subject of the account events, in bytes.
const MaxSubjectLength = 256

// Accounts are the NATS accounts: one per domain with a DomainAccountDefined, and the system account,
// whose users are cimdeploy's own (the rollout gate's $SYS.REQ.SERVER.PING). Once accounts exist the
// servers refuse clients without a user.
type Accounts struct {
	System  []User             `json:"system"`
	Domains map[string]Account `json:"domains"`
}

// Account is a domain's NATS account.
type Account struct {
	JetStream AccountJetStream `json:"jetstream"`
	// MaxConnections bounds the account's client connections; 0: no bound.
	MaxConnections int      `json:"max_connections"`
	Users          []User   `json:"users"` // sorted by name
	Exports        []Export `json:"exports"`
	Imports        []Import `json:"imports"`
}

// AccountJetStream are an account's JetStream limits in bytes and streams; 0: no limit of that kind.
type AccountJetStream struct {
	MaxMemory  int64 `json:"max_memory"`
	MaxStorage int64 `json:"max_storage"`
	MaxStreams int   `json:"max_streams"`
}

// User is an nkey user: NKey is its public key (U...); the seed stays with the user.
type User struct {
	Name        string       `json:"name"`
	NKey        string       `json:"nkey"`
	Role        string       `json:"role,omitempty"`
	Permissions *Permissions `json:"permissions,omitempty"` // effective; nil for system users
}

// Permissions are what a user may publish and subscribe to.
type Permissions struct {
	Publish   Rule `json:"publish"`
	Subscribe Rule `json:"subscribe"`
}

// Rule allows subjects and denies some of them.
type Rule struct {
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
}

// Export makes subjects of an account available to the others.
type Export struct {
	Kind    string `json:"kind"` // ExportStream or ExportService
	Subject string `json:"subject"`
}

// Import brings subjects another domain exports into an account; a stream import may put Prefix
// before them.
type Import struct {
	Domain  string `json:"domain"`
	Kind    string `json:"kind"`
	Subject string `json:"subject"`
	Prefix  string `json:"prefix,omitempty"`
}

// DefaultPermissions are the permissions of a built-in role in domain: domain-admin everything in its
// account; domain-service the domain's subjects (<domain>.>) and _INBOX.> for replies; event-store
// also the JetStream API and acknowledgements. ok is false for a custom role.
func DefaultPermissions(domain, role string) (p Permissions, ok bool) {
	own := []string{domain + ".>", "_INBOX.>"}
	switch role {
	case RoleDomainAdmin:
		return Permissions{Publish: Rule{Allow: []string{">"}, Deny: []string{}}, Subscribe: Rule{Allow: []string{">"}, Deny: []string{}}}, true
	case RoleDomainService:
		return Permissions{Publish: Rule{Allow: own, Deny: []string{}}, Subscribe: Rule{Allow: slices.Clone(own), Deny: []string{}}}, true
	case RoleEventStore:
		return Permissions{Publish: Rule{Allow: []string{domain + ".>", "$JS.API.>", "$JS.ACK.>", "_INBOX.>"}, Deny: []string{}},
			Subscribe: Rule{Allow: own, Deny: []string{}}}, true
	}
	return Permissions{}, false
}

// Payloads of the account events, decoded strictly.
type (
	domainAccountDefined struct {
		Domain         string           `json:"domain"`
		JetStream      AccountJetStream `json:"jetstream"`
		MaxConnections int              `json:"max_connections"`
	}
	domainUserAdded struct {
		Domain string `json:"domain"`
		Name   string `json:"name"`
		NKey   string `json:"nkey"`
		Role   string `json:"role"`
	}
	domainPermissionsSet struct {
		Domain    string `json:"domain"`
		Role      string `json:"role"`
		User      string `json:"user"`
		Publish   *Rule  `json:"publish"`
		Subscribe *Rule  `json:"subscribe"`
	}
	domainExportDefined struct {
		Domain  string `json:"domain"`
		Kind    string `json:"kind"`
		Subject string `json:"subject"`
	}
	domainImportDefined struct {
		Domain  string `json:"domain"`
		From    string `json:"from"`
		Kind    string `json:"kind"`
		Subject string `json:"subject"`
		Prefix  string `json:"prefix"`
	}
	systemUserAdded struct {
		Name string `json:"name"`
		NKey string `json:"nkey"`
	}
)

// accountFolder is the fold's state of the account events.
type accountFolder struct {
	domainBy  map[string]*events.Event            // domains created after the first
	accountBy map[string]*events.Event            // by domain
	userBy    map[string]map[string]*events.Event // domain -> user name
	nkeyOf    map[string]string                   // public key -> "domain user" (or the system account's)
	rolePerms map[string]map[string]Permissions   // domain -> role
	userPerms map[string]map[string]Permissions   // domain -> user
	systemBy  map[string]*events.Event
	firstBy   *events.Event // the first account event
}

func (a *accountFolder) init() {
	if a.accountBy != nil {
		return
	}
	a.accountBy = map[string]*events.Event{}
	a.userBy = map[string]map[string]*events.Event{}
	a.nkeyOf = map[string]string{}
	a.rolePerms = map[string]map[string]Permissions{}
	a.userPerms = map[string]map[string]Permissions{}
	a.systemBy = map[string]*events.Event{}
}

// domainCreatedBy is the event that created domain name, or nil.
func (f *folder) domainCreatedBy(name string) *events.Event {
	if f.domainBy != nil && f.t.Domain.Name == name {
		return f.domainBy
	}
	return f.acc.domainBy[name]
}

// addDomain records a domain created after the cluster's own.
func (f *folder) addDomain(ev *events.Event, d Domain) {
	if f.t.Domains == nil {
		f.t.Domains = map[string]Domain{}
		f.acc.domainBy = map[string]*events.Event{}
	}
	f.t.Domains[d.Name] = d
	f.acc.domainBy[d.Name] = ev
}

func (f *folder) applyAccounts(ev *events.Event) {
	if field, ok := seedIn(ev.Data, "data"); ok {
		// The value is not quoted: it is a private key.
		f.problem(ev, field, "holds an nkey seed (a private key): seeds never go into events (they end up in the Nix store); give the user's public key, which starts with U")
		return
	}
	f.acc.init()
	if f.t.Accounts == nil {
		f.t.Accounts = &Accounts{System: []User{}, Domains: map[string]Account{}}
		f.acc.firstBy = ev
	}
	switch ev.Type {
	case events.DomainAccountDefined:
		f.domainAccountDefined(ev)
	case events.DomainUserAdded:
		f.domainUserAdded(ev)
	case events.DomainPermissionsSet:
		f.domainPermissionsSet(ev)
	case events.DomainExportDefined:
		f.domainExportDefined(ev)
	case events.DomainImportDefined:
		f.domainImportDefined(ev)
	case events.SystemUserAdded:
		f.systemUserAdded(ev)
	}
}

// knownDomain checks that the domain of an account event was created (field is its field).
func (f *folder) knownDomain(ev *events.Event, field, domain string) bool {
	if f.domainCreatedBy(domain) == nil {
		f.problem(ev, field, "unknown domain %s (no DomainCreated event creates it before this one)", q(domain))
		return false
	}
	return true
}

// knownAccount checks that domain has an account.
func (f *folder) knownAccount(ev *events.Event, field, domain string) bool {
	if !f.knownDomain(ev, field, domain) {
		return false
	}
	if f.acc.accountBy[domain] == nil {
		f.problem(ev, field, "domain %s has no account (no DomainAccountDefined event defines it before this one)", q(domain))
		return false
	}
	return true
}

func (f *folder) domainAccountDefined(ev *events.Event) {
	var d domainAccountDefined
	if !f.decode(ev, &d) {
		return
	}
	f.aggregate(ev, "data.domain", d.Domain, "domain")
	if !f.knownDomain(ev, "data.domain", d.Domain) {
		return
	}
	ok := f.check(ev, "data.jetstream.max_memory", checkSize(d.JetStream.MaxMemory))
	ok = f.check(ev, "data.jetstream.max_storage", checkSize(d.JetStream.MaxStorage)) && ok
	ok = f.check(ev, "data.jetstream.max_streams", checkRange(d.JetStream.MaxStreams, 0, 1<<20)) && ok
	ok = f.check(ev, "data.max_connections", checkRange(d.MaxConnections, 0, 1<<24)) && ok
	if !ok {
		return
	}
	acc, defined := f.t.Accounts.Domains[d.Domain]
	if !defined {
		acc = Account{Users: []User{}, Exports: []Export{}, Imports: []Import{}}
	}
	// A second DomainAccountDefined of a domain changes its limits.
	acc.JetStream, acc.MaxConnections = d.JetStream, d.MaxConnections
	f.t.Accounts.Domains[d.Domain] = acc
	f.acc.accountBy[d.Domain] = ev
}

func (f *folder) domainUserAdded(ev *events.Event) {
	var u domainUserAdded
	if !f.decode(ev, &u) {
		return
	}
	f.aggregate(ev, "data.domain", u.Domain, "domain")
	ok := f.check(ev, "data.name", checkLabel(u.Name))
	ok = f.check(ev, "data.nkey", checkNKey(u.NKey)) && ok
	ok = f.check(ev, "data.role", checkLabel(u.Role)) && ok
	if !f.knownAccount(ev, "data.domain", u.Domain) || !ok {
		return
	}
	if by := f.acc.userBy[u.Domain][u.Name]; by != nil {
		f.problem(ev, "data.name", "duplicate user %s of domain %s, already added by event %d at %s", q(u.Name), q(u.Domain), by.Sequence, by.Source)
		return
	}
	if !f.uniqueNKey(ev, u.NKey, fmt.Sprintf("user %s of domain %s", u.Name, u.Domain)) {
		return
	}
	if f.acc.userBy[u.Domain] == nil {
		f.acc.userBy[u.Domain] = map[string]*events.Event{}
	}
	f.acc.userBy[u.Domain][u.Name] = ev
	acc := f.t.Accounts.Domains[u.Domain]
	acc.Users = append(slices.Clone(acc.Users), User{Name: u.Name, NKey: u.NKey, Role: u.Role})
	sort.Slice(acc.Users, func(i, j int) bool { return acc.Users[i].Name < acc.Users[j].Name })
	f.t.Accounts.Domains[u.Domain] = acc
}

// uniqueNKey checks that no other user has key: nats-server identifies a user by it.
func (f *folder) uniqueNKey(ev *events.Event, key, who string) bool {
	if other, dup := f.acc.nkeyOf[key]; dup {
		f.problem(ev, "data.nkey", "the public key is already %s's: every user has a key of its own", other)
		return false
	}
	f.acc.nkeyOf[key] = who
	return true
}

func (f *folder) domainPermissionsSet(ev *events.Event) {
	var p domainPermissionsSet
	if !f.decode(ev, &p) {
		return
	}
	f.aggregate(ev, "data.domain", p.Domain, "domain")
	if !f.knownAccount(ev, "data.domain", p.Domain) {
		return
	}
	ok := true
	switch {
	case (p.Role == "") == (p.User == ""):
		f.problem(ev, "data.role", "give either a role or a user, not both or neither")
		ok = false
	case p.Role != "":
		ok = f.check(ev, "data.role", checkLabel(p.Role))
	case f.acc.userBy[p.Domain][p.User] == nil:
		f.problem(ev, "data.user", "unknown user %s of domain %s (no DomainUserAdded event adds it before this one)", q(p.User), q(p.Domain))
		ok = false
	}
	var perms Permissions
	for _, r := range []struct {
		field string
		rule  *Rule
		out   *Rule
	}{{"data.publish", p.Publish, &perms.Publish}, {"data.subscribe", p.Subscribe, &perms.Subscribe}} {
		if r.rule == nil || len(r.rule.Allow) == 0 {
			f.problem(ev, r.field+".allow", "must list at least one subject (a user allowed nothing is refused everything; deny narrows what allow lets through)")
			ok = false
			continue
		}
		ok = f.checkSubjects(ev, r.field+".allow", r.rule.Allow) && ok
		ok = f.checkSubjects(ev, r.field+".deny", r.rule.Deny) && ok
		*r.out = Rule{Allow: slices.Clone(r.rule.Allow), Deny: nonNil(slices.Clone(r.rule.Deny))}
	}
	if !ok {
		return
	}
	target, key := f.acc.rolePerms, p.Role
	if p.User != "" {
		target, key = f.acc.userPerms, p.User
	}
	if target[p.Domain] == nil {
		target[p.Domain] = map[string]Permissions{}
	}
	target[p.Domain][key] = perms
}

func (f *folder) checkSubjects(ev *events.Event, field string, subjects []string) bool {
	ok := true
	for i, s := range subjects {
		ok = f.check(ev, fmt.Sprintf("%s[%d]", field, i), checkSubject(s, true)) && ok
	}
	return ok
}

func (f *folder) domainExportDefined(ev *events.Event) {
	var x domainExportDefined
	if !f.decode(ev, &x) {
		return
	}
	f.aggregate(ev, "data.domain", x.Domain, "domain")
	ok := f.check(ev, "data.kind", checkOneOf(x.Kind, ExportStream, ExportService))
	ok = f.check(ev, "data.subject", checkSubject(x.Subject, true)) && ok
	if !f.knownAccount(ev, "data.domain", x.Domain) || !ok {
		return
	}
	acc := f.t.Accounts.Domains[x.Domain]
	exp := Export{Kind: x.Kind, Subject: x.Subject}
	if slices.Contains(acc.Exports, exp) {
		f.problem(ev, "data.subject", "domain %s already exports the %s %s", q(x.Domain), x.Kind, q(x.Subject))
		return
	}
	acc.Exports = append(slices.Clone(acc.Exports), exp)
	f.t.Accounts.Domains[x.Domain] = acc
}

func (f *folder) domainImportDefined(ev *events.Event) {
	var m domainImportDefined
	if !f.decode(ev, &m) {
		return
	}
	f.aggregate(ev, "data.domain", m.Domain, "domain")
	ok := f.check(ev, "data.kind", checkOneOf(m.Kind, ExportStream, ExportService))
	ok = f.check(ev, "data.subject", checkSubject(m.Subject, true)) && ok
	if m.Prefix != "" {
		if m.Kind == ExportService {
			f.problem(ev, "data.prefix", "only a stream import takes a prefix")
			ok = false
		} else {
			ok = f.check(ev, "data.prefix", checkSubject(m.Prefix, false)) && ok
		}
	}
	if !f.knownAccount(ev, "data.domain", m.Domain) || !ok {
		return
	}
	if m.From == m.Domain {
		f.problem(ev, "data.from", "a domain does not import from itself")
		return
	}
	if !f.knownAccount(ev, "data.from", m.From) {
		return
	}
	exported := false
	for _, x := range f.t.Accounts.Domains[m.From].Exports {
		if x.Kind == m.Kind && subjectCovers(x.Subject, m.Subject) {
			exported = true
			break
		}
	}
	if !exported {
		f.problem(ev, "data.subject", "domain %s exports no %s that covers %s (no DomainExportDefined event before this one)", q(m.From), m.Kind, q(m.Subject))
		return
	}
	acc := f.t.Accounts.Domains[m.Domain]
	imp := Import{Domain: m.From, Kind: m.Kind, Subject: m.Subject, Prefix: m.Prefix}
	if slices.Contains(acc.Imports, imp) {
		f.problem(ev, "data.subject", "domain %s already imports the %s %s from %s", q(m.Domain), m.Kind, q(m.Subject), q(m.From))
		return
	}
	acc.Imports = append(slices.Clone(acc.Imports), imp)
	f.t.Accounts.Domains[m.Domain] = acc
}

func (f *folder) systemUserAdded(ev *events.Event) {
	var u systemUserAdded
	if !f.decode(ev, &u) {
		return
	}
	f.aggregate(ev, "data.name", u.Name, "system user")
	ok := f.check(ev, "data.name", checkLabel(u.Name))
	ok = f.check(ev, "data.nkey", checkNKey(u.NKey)) && ok
	if !ok {
		return
	}
	if by := f.acc.systemBy[u.Name]; by != nil {
		f.problem(ev, "data.name", "duplicate system user %s, already added by event %d at %s", q(u.Name), by.Sequence, by.Source)
		return
	}
	if !f.uniqueNKey(ev, u.NKey, "system user "+u.Name) {
		return
	}
	f.acc.systemBy[u.Name] = ev
	f.t.Accounts.System = append(slices.Clone(f.t.Accounts.System), User{Name: u.Name, NKey: u.NKey})
	sort.Slice(f.t.Accounts.System, func(i, j int) bool { return f.t.Accounts.System[i].Name < f.t.Accounts.System[j].Name })
}

// finishAccounts resolves every user's permissions (its own, else its role's in its domain, else the
// built-in role's) and checks that accounts come with a system user.
func (f *folder) finishAccounts() {
	a := f.t.Accounts
	if a == nil {
		return
	}
	if len(a.System) == 0 {
		f.problem(f.acc.firstBy, "event_type", "accounts are defined but no SystemUserAdded event gives the system account a user: "+
			"with accounts the servers refuse clients without a user, and the rollout gate needs a system user to ping every server")
	}
	for _, domain := range slices.Sorted(maps.Keys(a.Domains)) {
		acc := a.Domains[domain]
		users := slices.Clone(acc.Users)
		for i, u := range users {
			p, ok := f.acc.userPerms[domain][u.Name]
			if !ok {
				p, ok = f.acc.rolePerms[domain][u.Role]
			}
			if !ok {
				p, ok = DefaultPermissions(domain, u.Role)
			}
			if !ok {
				f.problem(f.acc.userBy[domain][u.Name], "data.role", "custom role %s has no permissions in domain %s: a DomainPermissionsSet event must set them (built-in roles: %s, %s, %s)",
					q(u.Role), q(domain), RoleDomainAdmin, RoleDomainService, RoleEventStore)
				continue
			}
			users[i].Permissions = &p
		}
		acc.Users = users
		a.Domains[domain] = acc
	}
	f.checkReservations()
}

// checkNKey accepts an nkey user public key. The value is never quoted: it might be a seed.
func checkNKey(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty: give the user's nkey public key (starting with U)")
	case s[0] == 'S' || s[0] == 's':
		return errors.New("is an nkey seed (a private key), not a public key: seeds never go into events; give the public key, which starts with U")
	case !nkeys.IsValidPublicUserKey(s):
		return fmt.Errorf("is not an nkey user public key (%d characters; want 56 starting with U, with a valid checksum)", len(s))
	}
	return nil
}

// seedLike is the shape of an nkey seed: 'S', the key type, base32 (58 characters for the seeds
// nkeys writes).
var seedLike = regexp.MustCompile(`^[Ss][A-Za-z2-7]{50,}=*$`)

// seedIn finds a string in the JSON data that is an nkey seed, or looks like one, and returns its path.
func seedIn(data []byte, field string) (string, bool) {
	var v any
	if json.Unmarshal(data, &v) != nil {
		return "", false // the strict decode reports it
	}
	return seedInValue(v, field)
}

func seedInValue(v any, field string) (string, bool) {
	switch v := v.(type) {
	case string:
		if _, err := nkeys.FromSeed([]byte(v)); err == nil || seedLike.MatchString(v) {
			return field, true
		}
	case []any:
		for i, e := range v {
			if p, ok := seedInValue(e, fmt.Sprintf("%s[%d]", field, i)); ok {
				return p, true
			}
		}
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if p, ok := seedInValue(v[k], field+"."+k); ok {
				return p, true
			}
		}
	}
	return "", false
}

// checkSubject accepts a NATS subject: tokens separated by '.', none empty, of printable ASCII
// without spaces; with wildcards, '*' as a whole token and '>' as the whole last token.
func checkSubject(s string, wildcards bool) error {
	if s == "" || len(s) > MaxSubjectLength {
		return fmt.Errorf("%s is not a NATS subject (1 to %d bytes)", q(s), MaxSubjectLength)
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return fmt.Errorf("%s is not a NATS subject: empty token (leading, trailing or double '.')", q(s))
		case strings.ContainsFunc(t, func(r rune) bool { return r <= ' ' || r >= 0x7f }):
			return fmt.Errorf("%s is not a NATS subject: spaces, control and non-ASCII characters are not allowed", q(s))
		case (t == "*" || t == ">") && !wildcards:
			return fmt.Errorf("%s: no wildcards here", q(s))
		case t == ">" && i != len(tokens)-1:
			return fmt.Errorf("%s is not a NATS subject: '>' must be the last token", q(s))
		case len(t) > 1 && strings.ContainsAny(t, "*>"):
			return fmt.Errorf("%s is not a NATS subject: '*' and '>' are whole tokens", q(s))
		}
	}
	return nil
}

// subjectCovers reports whether every subject that sub matches is matched by pattern.
func subjectCovers(pattern, sub string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(sub, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) {
			return false
		}
		switch s := st[i]; {
		case s == ">":
			return false
		case p == "*":
		case s == "*" || p != s:
			return false
		}
	}
	return len(st) == len(pt)
}
