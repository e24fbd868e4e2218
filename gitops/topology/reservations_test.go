package topology_test

import (
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// TestAccountReservations: nats-server reserves each account's JetStream limits out of the server's
// and refuses to start JetStream when they do not fit (checked against nats-server 2.9.10:
// "insufficient memory resources available (10028)"); the fold says so at the account that went over.
func TestAccountReservations(t *testing.T) {
	t.Parallel()
	all := allFixtures(t)
	if _, problems := topology.Fold(all); len(problems) > 0 {
		t.Fatalf("the fixtures: %v", problems)
	}
	// Without the fixtures' last ServiceConfigured (max_memory_store 1.5 GiB): cim's 1 GiB and billing's
	// 256 MiB do not fit in 1 GiB.
	var without []events.Event
	for _, ev := range all {
		if ev.Sequence != 23 {
			without = append(without, ev)
		}
	}
	_, problems := topology.Fold(without)
	want := "data.jetstream.max_memory: the accounts reserve 1.25 GiB of JetStream memory (cim 1 GiB + billing 256 MiB), more than the servers' max_memory_store of 1 GiB"
	if !strings.Contains(problems.Error(), want) || !strings.Contains(problems.Error(), "0015-domain-account-defined-billing.json") {
		t.Errorf("problems:\n%v\nwant %q at billing's account event", problems, want)
	}
	// Storage likewise.
	over := add(all, events.ServiceConfigured, `{"kind":"nats","settings":{"jetstream":{"max_file_store":4294967296}}}`)
	if _, problems := topology.Fold(over); !strings.Contains(problems.Error(), "the accounts reserve 8 GiB of JetStream file storage (cim 8 GiB), more than the servers' max_file_store of 4 GiB") {
		t.Errorf("problems:\n%v", problems)
	}
	// A server limit left to nats-server (0) is not checked.
	unset := add(all, events.ServiceConfigured, `{"kind":"nats","settings":{"jetstream":{"max_memory_store":0,"max_file_store":0}}}`)
	if _, problems := topology.Fold(unset); len(problems) > 0 {
		t.Errorf("limits left to nats-server: %v", problems)
	}
}
