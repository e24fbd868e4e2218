package topology

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// checkReservations checks that the servers can hold what the accounts reserve. nats-server reserves
// each account's JetStream max_memory and max_storage out of the server's max_memory_store and
// max_file_store when it enables JetStream for the accounts, and refuses to start JetStream when they
// do not fit ("Error enabling jetstream on configured accounts: insufficient memory resources
// available (10028)", nats-server's jetstream.go sufficientResources). A server limit of 0 is left to
// nats-server (a share of the machine's memory and disk): nothing to check against.
func (f *folder) checkReservations() {
	a, n := f.t.Accounts, f.t.Services.NATS
	if a == nil || n == nil {
		return
	}
	domains := make([]string, 0, len(a.Domains))
	for d := range a.Domains {
		domains = append(domains, d)
	}
	// In the order the accounts were defined: the problem is the event that went over.
	slices.SortFunc(domains, func(x, y string) int {
		return cmp.Or(cmp.Compare(f.acc.accountBy[x].Sequence, f.acc.accountBy[y].Sequence), strings.Compare(x, y))
	})
	for _, lim := range []struct {
		field, setting, kind string
		server               int64
		of                   func(AccountJetStream) int64
	}{
		{"max_memory", "max_memory_store", "memory", n.JetStream.MaxMemoryStore, func(j AccountJetStream) int64 { return j.MaxMemory }},
		{"max_storage", "max_file_store", "file storage", n.JetStream.MaxFileStore, func(j AccountJetStream) int64 { return j.MaxStorage }},
	} {
		if lim.server <= 0 {
			continue
		}
		var sum int64
		var parts []string
		for _, d := range domains {
			v := lim.of(a.Domains[d].JetStream)
			if v <= 0 {
				continue
			}
			sum += v
			parts = append(parts, fmt.Sprintf("%s %s", d, size(v)))
			if sum > lim.server {
				f.problem(f.acc.accountBy[d], "data.jetstream."+lim.field,
					"the accounts reserve %s of JetStream %s (%s), more than the servers' %s of %s: nats-server would refuse to start JetStream (insufficient %s resources available, 10028)",
					size(sum), lim.kind, strings.Join(parts, " + "), lim.setting, size(lim.server), strings.Fields(lim.kind)[0])
				break
			}
		}
	}
}

// size formats a byte count in GiB when it is a whole eighth of one, in MiB when a whole number of them,
// else in bytes.
func size(b int64) string {
	switch {
	case b >= 1<<30 && b%(1<<27) == 0:
		return strconv.FormatFloat(float64(b)/(1<<30), 'f', -1, 64) + " GiB"
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", b>>20)
	}
	return fmt.Sprintf("%d bytes", b)
}
