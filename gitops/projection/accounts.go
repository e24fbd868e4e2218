package projection

import (
	"github.com/cimdeploy/cimdeploy/gitops/nixexpr"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// accountSettings are the nats-server settings of the topology's accounts
// (https://docs.nats.io/running-a-nats-service/configuration/securing_nats/accounts): one account per
// domain with its nkey users (public keys only: nothing secret enters the Nix store), their
// permissions, JetStream limits, connection limit, exports and imports; and the system account SYS,
// named by system_account, whose users are cimdeploy's. None without account events: the servers
// then take anonymous clients, as before.
func accountSettings(t *topology.Topology) []nixexpr.Binding {
	a := t.Accounts
	if a == nil {
		return nil
	}
	accounts := nixexpr.Attrs{topology.SystemAccount: nixexpr.Set{nixexpr.Bind("users", users(a.System))}}
	for name, acc := range a.Domains {
		accounts[name] = account(acc)
	}
	return []nixexpr.Binding{
		nixexpr.Bind("accounts", accounts),
		nixexpr.Bind("system_account", nixexpr.String(topology.SystemAccount)),
	}
}

func account(acc topology.Account) nixexpr.Set {
	s := nixexpr.Set{nixexpr.Bind("jetstream", accountJetStream(acc.JetStream))}
	if acc.MaxConnections > 0 {
		s = append(s, nixexpr.Bind("limits.max_connections", nixexpr.Int(acc.MaxConnections)))
	}
	s = append(s, nixexpr.Bind("users", users(acc.Users)))
	if len(acc.Exports) > 0 {
		exports := nixexpr.List{}
		for _, x := range acc.Exports {
			exports = append(exports, nixexpr.Set{nixexpr.Binding{Path: []string{x.Kind}, Value: nixexpr.String(x.Subject)}})
		}
		s = append(s, nixexpr.Bind("exports", exports))
	}
	if len(acc.Imports) > 0 {
		imports := nixexpr.List{}
		for _, m := range acc.Imports {
			imp := nixexpr.Set{nixexpr.Binding{Path: []string{m.Kind}, Value: nixexpr.Set{
				nixexpr.Bind("account", nixexpr.String(m.Domain)),
				nixexpr.Bind("subject", nixexpr.String(m.Subject)),
			}}}
			if m.Prefix != "" {
				imp = append(imp, nixexpr.Bind("prefix", nixexpr.String(m.Prefix)))
			}
			imports = append(imports, imp)
		}
		s = append(s, nixexpr.Bind("imports", imports))
	}
	return s
}

// accountJetStream enables JetStream for the account, within its limits when it has any.
func accountJetStream(js topology.AccountJetStream) nixexpr.Value {
	s := nixexpr.Set{}
	if js.MaxMemory > 0 {
		s = append(s, nixexpr.Bind("max_memory", nixexpr.Int(js.MaxMemory)))
	}
	if js.MaxStorage > 0 {
		s = append(s, nixexpr.Bind("max_file", nixexpr.Int(js.MaxStorage)))
	}
	if js.MaxStreams > 0 {
		s = append(s, nixexpr.Bind("max_streams", nixexpr.Int(js.MaxStreams)))
	}
	if len(s) == 0 {
		return nixexpr.String("enabled")
	}
	return s
}

func users(us []topology.User) nixexpr.List {
	l := nixexpr.List{}
	for _, u := range us {
		user := nixexpr.Set{nixexpr.Bind("nkey", nixexpr.String(u.NKey))}
		if p := u.Permissions; p != nil {
			user = append(user, nixexpr.Bind("permissions", nixexpr.Set{
				nixexpr.Bind("publish", rule(p.Publish)),
				nixexpr.Bind("subscribe", rule(p.Subscribe)),
			}))
		}
		l = append(l, user)
	}
	return l
}

func rule(r topology.Rule) nixexpr.Set {
	s := nixexpr.Set{nixexpr.Bind("allow", stringList(r.Allow))}
	if len(r.Deny) > 0 {
		s = append(s, nixexpr.Bind("deny", stringList(r.Deny)))
	}
	return s
}
