package topology_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// addAccount appends an account event; its aggregate_id is data.domain, or data.name.
func addAccount(evs []events.Event, typ, data string) []events.Event {
	seq := uint64(len(evs) + 1)
	var ids struct{ Domain, Name string }
	json.Unmarshal([]byte(data), &ids)
	agg := ids.Domain
	if agg == "" {
		agg = ids.Name
	}
	return append(slices.Clone(evs), events.Event{
		EventID: fmt.Sprintf("test-%d", seq), AggregateID: agg, Sequence: seq,
		Timestamp: time.Date(2025, 11, 21, 0, 0, 0, 0, time.UTC), Type: typ, Data: json.RawMessage(data),
		Source: events.Source{File: fmt.Sprintf("test-%d.json", seq), Line: 1},
	})
}

func newUserKey(t testing.TB) (public, seed string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return pub, string(s)
}

func TestFoldAccountsFixtures(t *testing.T) {
	t.Parallel()
	top, problems := topology.Fold(allFixtures(t))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if top.Domain.Name != "cim" {
		t.Errorf("the cluster's domain is the first created: %q", top.Domain.Name)
	}
	if d := top.Domains["billing"]; d.Administrator != "billing@cim.local" || len(top.Domains) != 1 {
		t.Errorf("domains = %+v", top.Domains)
	}
	a := top.Accounts
	if a == nil || len(a.System) != 1 || a.System[0].Name != "cimdeploy" || !strings.HasPrefix(a.System[0].NKey, "U") {
		t.Fatalf("accounts = %+v", a)
	}
	cim, billing := a.Domains["cim"], a.Domains["billing"]
	if cim.JetStream.MaxStorage != 8<<30 || cim.MaxConnections != 1024 || len(cim.Exports) != 1 || cim.Exports[0].Subject != "cim.events.>" {
		t.Errorf("cim = %+v", cim)
	}
	store := cim.Users[0]
	if store.Name != "cim-store" || store.Permissions == nil || !slices.Contains(store.Permissions.Publish.Allow, "$JS.API.>") {
		t.Errorf("event-store user = %+v", store)
	}
	if len(billing.Users) != 2 || billing.Users[0].Name != "billing-api" || billing.Users[1].Name != "billing-auditor" {
		t.Fatalf("billing users = %+v", billing.Users)
	}
	api, auditor := billing.Users[0].Permissions, billing.Users[1].Permissions
	if want := []string{"billing.>", "_INBOX.>"}; !slices.Equal(api.Publish.Allow, want) || !slices.Equal(api.Subscribe.Allow, want) {
		t.Errorf("domain-service default = %+v, want %v", api, want)
	}
	if !slices.Equal(auditor.Publish.Allow, []string{"_INBOX.>"}) || !slices.Equal(auditor.Subscribe.Deny, []string{"billing.secrets.>"}) {
		t.Errorf("custom role = %+v", auditor)
	}
	want := topology.Import{Domain: "cim", Kind: "stream", Subject: "cim.events.>", Prefix: "billing.from-cim"}
	if len(billing.Imports) != 1 || billing.Imports[0] != want {
		t.Errorf("imports = %+v", billing.Imports)
	}
}

func TestFoldPermissionsPrecedence(t *testing.T) {
	t.Parallel()
	evs := allFixtures(t)
	// A user's own permissions win over its role's, the role's set in its domain over the default.
	evs = addAccount(evs, events.DomainPermissionsSet, `{"domain":"billing","role":"domain-service","publish":{"allow":["billing.api.>"]},"subscribe":{"allow":["billing.api.>","_INBOX.>"]}}`)
	top, problems := topology.Fold(evs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if got := top.Accounts.Domains["billing"].Users[0].Permissions.Publish.Allow; !slices.Equal(got, []string{"billing.api.>"}) {
		t.Errorf("role permissions of the domain: %v", got)
	}
	evs = addAccount(evs, events.DomainPermissionsSet, `{"domain":"billing","user":"billing-api","publish":{"allow":["billing.x"]},"subscribe":{"allow":["_INBOX.>"]}}`)
	top, problems = topology.Fold(evs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if got := top.Accounts.Domains["billing"].Users[0].Permissions.Publish.Allow; !slices.Equal(got, []string{"billing.x"}) {
		t.Errorf("user permissions: %v", got)
	}
}

func TestAccountValidation(t *testing.T) {
	t.Parallel()
	base := allFixtures(t)
	next := len(base) + 1 // the sequence of the first event a case adds
	ev := func(n int) string { return fmt.Sprintf("event %d (test-%d)", n, n) }
	pub, seed := newUserKey(t)
	fixtureKey := "UC2J2FICNYCVM4B5DPCZZZXEHDPVL5BUA6SKN2HYUCE3TOJTZA3CBYLQ" // cimdeploy's, 0011
	for _, tc := range []struct {
		name string
		evs  []events.Event
		want []string
	}{
		{"unknown field", addAccount(base, events.DomainUserAdded, `{"domain":"cim","name":"x","nkey":"`+pub+`","role":"domain-service","password":"p"}`),
			[]string{fmt.Sprintf("test-%d.json:1: ", next) + ev(next) + ": data.password", "unknown field"}},
		{"a seed instead of a public key", addAccount(base, events.DomainUserAdded, `{"domain":"cim","name":"x","nkey":"`+seed+`","role":"domain-service"}`),
			[]string{ev(next) + ": data.nkey: holds an nkey seed (a private key)"}},
		{"a seed in another field", addAccount(base, events.SystemUserAdded, `{"name":"ops","nkey":"`+pub+`","note":"`+seed+`"}`),
			[]string{`data.note: holds an nkey seed`}},
		{"not an nkey", addAccount(base, events.DomainUserAdded, `{"domain":"cim","name":"x","nkey":"UABC","role":"domain-service"}`),
			[]string{`data.nkey: is not an nkey user public key (4 characters`}},
		{"an account key, not a user's", addAccount(base, events.DomainUserAdded, `{"domain":"cim","name":"x","nkey":"`+accountKey(t)+`","role":"domain-service"}`),
			[]string{`data.nkey: is not an nkey user public key`}},
		{"duplicate user", addAccount(base, events.DomainUserAdded, `{"domain":"cim","name":"cim-store","nkey":"`+pub+`","role":"domain-service"}`),
			[]string{`data.name: duplicate user "cim-store" of domain "cim", already added by event 12 at ../../fixtures/events/0012-domain-user-added-cim-store.json`}},
		{"a key used twice", addAccount(base, events.DomainUserAdded, `{"domain":"cim","name":"x","nkey":"`+fixtureKey+`","role":"domain-service"}`),
			[]string{`data.nkey: the public key is already system user cimdeploy's`}},
		{"user of a domain without account", addAccount(addAccount(base, events.DomainCreated, `{"name":"ops","purpose":"p","administrator":"a"}`),
			events.DomainUserAdded, `{"domain":"ops","name":"x","nkey":"`+pub+`","role":"domain-service"}`),
			[]string{ev(next+1) + `: data.domain: domain "ops" has no account`}},
		{"account of an unknown domain", addAccount(base, events.DomainAccountDefined, `{"domain":"nope"}`),
			[]string{`data.domain: unknown domain "nope"`}},
		{"domain created twice", addAccount(base, events.DomainCreated, `{"name":"billing","purpose":"p","administrator":"a"}`),
			[]string{`event_type: the domain "billing" was already created by event 14`}},
		{"subject with a space", addAccount(base, events.DomainExportDefined, `{"domain":"cim","kind":"stream","subject":"cim.a b"}`),
			[]string{`data.subject: "cim.a b" is not a NATS subject: spaces`}},
		{"subject with > inside", addAccount(base, events.DomainPermissionsSet, `{"domain":"cim","role":"r","publish":{"allow":["cim.>.x"]},"subscribe":{"allow":["cim.>"],"deny":["a..b"]}}`),
			[]string{`data.publish.allow[0]: "cim.>.x" is not a NATS subject: '>' must be the last token`, `data.subscribe.deny[0]: "a..b" is not a NATS subject: empty token`}},
		{"permissions allow nothing", addAccount(base, events.DomainPermissionsSet, `{"domain":"cim","role":"r","subscribe":{"allow":["cim.>"]}}`),
			[]string{`data.publish.allow: must list at least one subject`}},
		{"role and user", addAccount(base, events.DomainPermissionsSet, `{"domain":"cim","role":"r","user":"cim-store","publish":{"allow":["x"]},"subscribe":{"allow":["x"]}}`),
			[]string{`data.role: give either a role or a user`}},
		{"permissions of an unknown user", addAccount(base, events.DomainPermissionsSet, `{"domain":"cim","user":"ghost","publish":{"allow":["x"]},"subscribe":{"allow":["x"]}}`),
			[]string{`data.user: unknown user "ghost" of domain "cim"`}},
		{"custom role without permissions", addAccount(base, events.DomainUserAdded, `{"domain":"cim","name":"x","nkey":"`+pub+`","role":"operator"}`),
			[]string{ev(next) + `: data.role: custom role "operator" has no permissions in domain "cim"`}},
		{"import from an unknown domain", addAccount(base, events.DomainImportDefined, `{"domain":"billing","from":"shipping","kind":"stream","subject":"shipping.>"}`),
			[]string{`data.from: unknown domain "shipping"`}},
		{"import of something not exported", addAccount(base, events.DomainImportDefined, `{"domain":"billing","from":"cim","kind":"stream","subject":"cim.>"}`),
			[]string{`data.subject: domain "cim" exports no stream that covers "cim.>"`}},
		{"import of a service exported as a stream", addAccount(base, events.DomainImportDefined, `{"domain":"billing","from":"cim","kind":"service","subject":"cim.events.x"}`),
			[]string{`exports no service that covers "cim.events.x"`}},
		{"service import with a prefix", addAccount(base, events.DomainImportDefined, `{"domain":"billing","from":"cim","kind":"service","subject":"cim.events.x","prefix":"p"}`),
			[]string{`data.prefix: only a stream import takes a prefix`}},
		{"import from itself", addAccount(base, events.DomainImportDefined, `{"domain":"cim","from":"cim","kind":"stream","subject":"cim.events.>"}`),
			[]string{`data.from: a domain does not import from itself`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, problems := topology.Fold(tc.evs)
			got := problems.Error()
			if len(problems) == 0 {
				t.Fatal("no problem")
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("problems do not mention %q:\n%s", w, got)
				}
			}
			if strings.Contains(got, seed) || strings.Contains(got, seed[:20]) {
				t.Errorf("a problem echoes the seed:\n%s", got)
			}
		})
	}
}

func TestAccountsNeedASystemUser(t *testing.T) {
	t.Parallel()
	var evs []events.Event
	for _, ev := range allFixtures(t) {
		if ev.Type != events.SystemUserAdded {
			evs = append(evs, ev)
		}
	}
	for i := range evs {
		evs[i].Sequence = uint64(i + 1)
	}
	_, problems := topology.Fold(evs)
	if got := problems.Error(); !strings.Contains(got, "event 10 (0193a6c4-5e10-7000-8000-000000000010): event_type: accounts are defined but no SystemUserAdded event") {
		t.Errorf("problems = %s", got)
	}
}

func TestNoAccountEventsNoAccounts(t *testing.T) {
	t.Parallel()
	top, problems := topology.Fold(fixtures(t))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if top.Accounts != nil || top.Domains != nil {
		t.Errorf("accounts %+v, domains %+v: the cluster stays open to anonymous clients without account events", top.Accounts, top.Domains)
	}
}

func accountKey(t testing.TB) string {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
