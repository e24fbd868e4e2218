package topology

import (
	"fmt"
	"net/netip"
	"regexp"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// Security is what ClusterSecured says: TLS and authentication between the nodes' routes, TLS for
// clients when asked, where each node keeps its secrets, and who may reach which port (the firewall).
// nil means the cluster is not secured (the default, as before ClusterSecured).
type Security struct {
	// RouteSubject is the subject every node's certificate carries (RFC 2253, as nats-server prints
	// it, e.g. CN=nats-route): the cluster's authorization user under TLS verify_and_map. A route whose
	// certificate is not signed by the cluster's CA, or names another subject, is refused.
	RouteSubject string `json:"route_subject"`
	// ClientTLS: clients must connect with TLS (the node's certificate, the same CA).
	ClientTLS bool `json:"client_tls"`
	// SecretsDir is the directory on each node that holds SecretFiles (outside the Nix store,
	// installed by cimdeploy before the switch).
	SecretsDir string `json:"secrets_dir"`
	// ManagementNetworks may reach the monitoring port and the exporters.
	ManagementNetworks []netip.Prefix `json:"management_networks"`
	// ClientNetworks may reach the client port.
	ClientNetworks []netip.Prefix `json:"client_networks"`
}

// The files every node keeps in Security.SecretsDir, PEM encoded: the cluster's CA certificate, the
// node's certificate (its address as an IP SAN, usable as TLS server and client) and its private key.
const (
	SecretCA       = "ca.pem"
	SecretCert     = "node.pem"
	SecretKey      = "node-key.pem"
	DefaultSecrets = "/var/lib/nats/secrets"
	// DefaultRouteSubject is the route certificates' subject when the event names none.
	DefaultRouteSubject = "CN=nats-route"
)

// SecretFiles are the names of the files every node keeps in its secrets directory.
var SecretFiles = []string{SecretCA, SecretCert, SecretKey}

// Secret is the path of the secret file name on a node.
func (s *Security) Secret(name string) string { return s.SecretsDir + "/" + name }

type clusterSecured struct {
	Kind               string   `json:"kind"`
	RouteSubject       string   `json:"route_subject"`
	ClientTLS          bool     `json:"client_tls"`
	SecretsDir         string   `json:"secrets_dir"`
	ManagementNetworks []string `json:"management_networks"`
	ClientNetworks     []string `json:"client_networks"`
}

// routeSubject is a distinguished name of attribute=value pairs without characters that need
// escaping in RFC 2253 or in a nats-server configuration.
var routeSubject = regexp.MustCompile(`^[A-Za-z]+=[A-Za-z0-9 ._-]{1,64}(,[A-Za-z]+=[A-Za-z0-9 ._-]{1,64}){0,7}$`)

// clusterSecured folds ClusterSecured: a later event replaces what an earlier one said.
func (f *folder) clusterSecured(ev *events.Event) {
	c := clusterSecured{RouteSubject: DefaultRouteSubject, SecretsDir: DefaultSecrets}
	if !f.decode(ev, &c) {
		return
	}
	f.aggregate(ev, "data.kind", c.Kind, "service")
	if c.Kind != KindNATS {
		f.problem(ev, "data.kind", "%s: only the %s service's cluster can be secured", q(c.Kind), KindNATS)
		return
	}
	if f.serviceBy[KindNATS] == nil {
		f.problem(ev, "data.kind", "service %s is not added (no ServiceAdded event adds it before this one)", q(c.Kind))
		return
	}
	ok := f.check(ev, "data.route_subject", checkMatch(c.RouteSubject, routeSubject, "a subject such as CN=nats-route (attribute=value pairs, comma-separated)"))
	ok = f.check(ev, "data.secrets_dir", checkAbsPath(c.SecretsDir)) && ok
	if c.SecretsDir == "/nix" || len(c.SecretsDir) > 5 && c.SecretsDir[:5] == "/nix/" {
		f.problem(ev, "data.secrets_dir", "%s is in the Nix store's tree: secrets never go there", q(c.SecretsDir))
		ok = false
	}
	mgmt, ok1 := f.prefixes(ev, "data.management_networks", c.ManagementNetworks)
	clients, ok2 := f.prefixes(ev, "data.client_networks", c.ClientNetworks)
	if !ok || !ok1 || !ok2 {
		return
	}
	f.t.Security = &Security{RouteSubject: c.RouteSubject, ClientTLS: c.ClientTLS, SecretsDir: c.SecretsDir,
		ManagementNetworks: mgmt, ClientNetworks: clients}
}

// prefixes parses a non-empty list of IPv4 networks in CIDR form.
func (f *folder) prefixes(ev *events.Event, field string, ss []string) ([]netip.Prefix, bool) {
	if len(ss) == 0 {
		f.problem(ev, field, "must name at least one network, such as 10.0.0.0/24")
		return nil, false
	}
	out := make([]netip.Prefix, 0, len(ss))
	ok := true
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil || !p.Addr().Is4():
			f.problem(ev, fmt.Sprintf("%s[%d]", field, i), "%s is not an IPv4 network such as 10.0.0.0/24", q(s))
			ok = false
		case p != p.Masked():
			f.problem(ev, fmt.Sprintf("%s[%d]", field, i), "%s has host bits set; the network is %s", p, p.Masked())
			ok = false
		default:
			out = append(out, p)
		}
	}
	return out, ok
}
