package topology_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

func TestClusterSecured(t *testing.T) {
	t.Parallel()
	evs := add(fixtures(t), events.ClusterSecured, `{"kind":"nats","management_networks":["10.0.0.0/24"],"client_networks":["10.0.0.0/19"]}`)
	top := must(topology.Fold(evs))
	want := topology.Security{RouteSubject: topology.DefaultRouteSubject, SecretsDir: topology.DefaultSecrets,
		ManagementNetworks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")},
		ClientNetworks:     []netip.Prefix{netip.MustParsePrefix("10.0.0.0/19")}}
	got := top.Security
	if got == nil || got.RouteSubject != want.RouteSubject || got.SecretsDir != want.SecretsDir || got.ClientTLS ||
		got.ManagementNetworks[0] != want.ManagementNetworks[0] || got.ClientNetworks[0] != want.ClientNetworks[0] {
		t.Fatalf("security = %+v, want %+v", got, want)
	}
	if p := got.Secret(topology.SecretKey); p != "/var/lib/nats/secrets/node-key.pem" {
		t.Errorf("key path %s", p)
	}
	// A later event replaces the earlier one.
	evs = add(evs, events.ClusterSecured, `{"kind":"nats","client_tls":true,"secrets_dir":"/etc/nats/secrets","management_networks":["10.0.1.0/24"],"client_networks":["10.0.0.0/19"]}`)
	top = must(topology.Fold(evs))
	if !top.Security.ClientTLS || top.Security.SecretsDir != "/etc/nats/secrets" {
		t.Errorf("second event not applied: %+v", top.Security)
	}
	if unsecured := must(topology.Fold(fixtures(t))); unsecured.Security != nil {
		t.Errorf("fixtures without ClusterSecured: security %+v", unsecured.Security)
	}
}

func TestClusterSecuredProblems(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, data, want string
	}{
		{name: "other service", data: `{"kind":"prometheus-node-exporter","management_networks":["10.0.0.0/24"],"client_networks":["10.0.0.0/19"]}`,
			want: "data.kind: \"prometheus-node-exporter\": only the nats service's cluster can be secured"},
		{name: "no management network", data: `{"kind":"nats","client_networks":["10.0.0.0/19"]}`,
			want: "data.management_networks: must name at least one network"},
		{name: "bad network", data: `{"kind":"nats","management_networks":["10.0.0.1"],"client_networks":["10.0.0.0/19"]}`,
			want: "data.management_networks[0]: \"10.0.0.1\" is not an IPv4 network"},
		{name: "host bits", data: `{"kind":"nats","management_networks":["10.0.0.0/24"],"client_networks":["10.0.0.1/19"]}`,
			want: "data.client_networks[0]: 10.0.0.1/19 has host bits set"},
		{name: "secrets in the store", data: `{"kind":"nats","secrets_dir":"/nix/store/x","management_networks":["10.0.0.0/24"],"client_networks":["10.0.0.0/19"]}`,
			want: "data.secrets_dir: \"/nix/store/x\" is in the Nix store's tree"},
		{name: "relative secrets dir", data: `{"kind":"nats","secrets_dir":"secrets","management_networks":["10.0.0.0/24"],"client_networks":["10.0.0.0/19"]}`,
			want: "data.secrets_dir: \"secrets\" is not a clean absolute path"},
		{name: "subject with quotes", data: `{"kind":"nats","route_subject":"CN=\"x\"","management_networks":["10.0.0.0/24"],"client_networks":["10.0.0.0/19"]}`,
			want: "data.route_subject:"},
		{name: "unknown field", data: `{"kind":"nats","password":"x","management_networks":["10.0.0.0/24"],"client_networks":["10.0.0.0/19"]}`,
			want: "data.password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, problems := topology.Fold(add(fixtures(t), events.ClusterSecured, tc.data))
			if len(problems) == 0 || !strings.Contains(problems.Error(), tc.want) {
				t.Errorf("problems %v, want %q", problems, tc.want)
			}
		})
	}
}
