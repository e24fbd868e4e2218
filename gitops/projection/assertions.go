package projection

import (
	"fmt"
	"strings"

	"github.com/cimdeploy/cimdeploy/gitops/nixexpr"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// assertionBindings restate, as NixOS assertions on the final configuration, the rules the fold checks
// on the events that a configuration can break (gitops/topology: configure and finish): a module written
// by hand next to the generated one (lib.mkForce on a port, a shorter lame duck) fails the system's
// build with the rule's message instead of a nats-server that refuses to start or two services on one
// port. Rules about the events themselves (names, addresses, ids) have nothing to check here: the
// module takes them from topology.nix.
//
// The checks read config (the merged values, overrides included); the messages name the option, the
// value it has and the value the events give.
//
// role is the module's: a cluster member's routes and leafnode listener have ports and a cluster name to
// check, a leaf's do not.
func assertionBindings(t *topology.Topology, role string) (nixexpr.Set, error) {
	n := t.Services.NATS
	member := role == topology.RoleNATSCluster
	ports := []string{`{ name = "services.nats.port"; port = nats.port; }`}
	if member {
		ports = append(ports, `{ name = "services.nats.settings.cluster.listen"; port = listenPort nats.settings.cluster.listen; }`)
	}
	ports = append(ports, `{ name = "services.nats.settings.http_port"; port = nats.settings.http_port; }`)
	if t.Services.NATSExporter != nil {
		ports = append(ports, `{ name = "services.prometheus.exporters.nats.port"; port = exporters.nats.port; }`)
	}
	if t.Services.NodeExporter != nil {
		ports = append(ports, `{ name = "services.prometheus.exporters.node.port"; port = exporters.node.port; }`)
	}
	// The events' values enter the code only as quoted Nix strings, appended to the messages.
	said := map[string]string{}
	for k, v := range map[string]string{
		"duration": n.LameDuckDuration, "grace": n.LameDuckGracePeriod,
		"store": n.JetStream.StoreDir,
	} {
		q, err := nixexpr.Quote(v)
		if err != nil {
			return nil, fmt.Errorf("assertions: %w", err)
		}
		said[k] = q
	}
	var js []string
	if n.JetStream.MaxMemoryStore > 0 {
		js = append(js, "max_memory_store")
	}
	if n.JetStream.MaxFileStore > 0 {
		js = append(js, "max_file_store")
	}
	var limits strings.Builder
	for _, k := range js {
		fmt.Fprintf(&limits, `
      {
        assertion = builtins.isInt (nats.settings.jetstream.%[1]s or 0) && (nats.settings.jetstream.%[1]s or 0) >= 0;
        message = "services.nats.settings.jetstream.%[1]s is ${builtins.toJSON (nats.settings.jetstream.%[1]s or null)}: a number of bytes, 0 or more (the events say %[2]d)";
      }`, k, map[string]int64{"max_memory_store": n.JetStream.MaxMemoryStore, "max_file_store": n.JetStream.MaxFileStore}[k])
	}

	leafPort, clusterName := "", ""
	if member {
		// A hub's members listen for leaf nodes: the listener is in settings only there.
		leafPort = `
        ++ lib.optional (nats.settings ? leafnodes) { name = "services.nats.settings.leafnodes.port"; port = nats.settings.leafnodes.port; }`
		clusterName = `
      {
        assertion = builtins.match "[A-Za-z0-9_-]{1,64}" nats.settings.cluster.name != null;
        message = "services.nats.settings.cluster.name ${builtins.toJSON nats.settings.cluster.name} is not a NATS cluster name of letters, digits, - and _ (the events say ${node.cluster})";
      }`
	}
	code := `let
      nats = config.services.nats;
      exporters = config.services.prometheus.exporters;
      # Seconds of a Go duration (time.ParseDuration: "2m", "1m30s", "500ms"), or null.
      seconds = s:
        let
          m = builtins.match "([0-9]+(\\.[0-9]+)?)(ns|us|µs|ms|s|m|h)(([0-9].*)?)" s;
          unit = { ns = 1.0e-9; us = 1.0e-6; "µs" = 1.0e-6; ms = 0.001; s = 1; m = 60; h = 3600; };
          rest = if m == null || builtins.elemAt m 3 == "" then 0 else seconds (builtins.elemAt m 3);
        in
        if m == null || rest == null then null
        else builtins.fromJSON (builtins.elemAt m 0) * unit.${builtins.elemAt m 2} + rest;
      duration = seconds nats.settings.lame_duck_duration;
      grace = seconds nats.settings.lame_duck_grace_period;
      listenPort = s: let m = builtins.match ".*:([0-9]+)" s; in if m == null then null else builtins.fromJSON (builtins.head m);
      ports = [
        ` + strings.Join(ports, "\n        ") + `
      ]` + leafPort + `;
      collisions = builtins.filter (p: builtins.length (builtins.filter (o: o.port == p.port) ports) > 1) ports;
    in
    [
      {
        assertion = duration != null && duration >= 30;
        message = "services.nats.settings.lame_duck_duration is ${nats.settings.lame_duck_duration}: nats-server refuses a lame duck duration under 30s (invalid lame_duck_duration, minimum is 30 seconds); the events say " + ` + said["duration"] + `;
      }
      {
        assertion = duration != null && grace != null && grace < duration;
        message = "services.nats.settings.lame_duck_grace_period ${nats.settings.lame_duck_grace_period} must be shorter than lame_duck_duration ${nats.settings.lame_duck_duration} (nats-server refuses it); the events say " + ` + said["grace"] + ` + " and " + ` + said["duration"] + `;
      }
      {
        assertion = collisions == [ ];
        message = "two services on one port: ${builtins.concatStringsSep ", " (map (p: "${p.name} = ${toString p.port}") collisions)}; every service of the events has its own";
      }` + clusterName + `
      {
        assertion = builtins.match "(/[A-Za-z0-9._-]+)+" nats.settings.jetstream.store_dir != null
          && builtins.match "(.*/)?[.][.]?(/.*)?" nats.settings.jetstream.store_dir == null;
        message = "services.nats.settings.jetstream.store_dir ${builtins.toJSON nats.settings.jetstream.store_dir} is not a clean absolute path (the events say " + ` + said["store"] + ` + ")";
      }` + limits.String() + `
    ]`
	return nixexpr.Set{nixexpr.Blank, nixexpr.Bind("assertions", nixexpr.Raw(code))}, nil
}
