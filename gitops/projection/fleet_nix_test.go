package projection_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/nixrunner"
)

// stubNixpkgs is the lab's stand-in for nixpkgs (fixtures/lab/nixpkgs): NixOS' module system and the
// modules cimdeploy uses, whose nats module checks the configuration with the real `nats-server -t` at
// build time, as nixpkgs' does.
func stubNixpkgs(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "fixtures", "lab", "nixpkgs"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// natsConf is a built system's NATS configuration (etc/nats/nats.json, the file nats-server -t checked),
// nil when the system has none.
func natsConf(t *testing.T, system string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(system, "etc", "nats", "nats.json"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatalf("%s: %v", system, err)
	}
	return conf
}

// TestFleetBuilds builds every node of the fleet (two clusters of three, two leaves of cim-cluster, a
// storage node, a repository role's node) with real Nix against the stub nixpkgs: each NATS server's
// configuration passes `nats-server -t` in the build. It then checks what each built system holds: the
// routes of the node's own cluster, the leafnode listener only on the hub, the leaf's remote and
// JetStream domain, no NATS on the others, and each role's firewall ports (the repository module's
// merged in).
func TestFleetBuilds(t *testing.T) {
	t.Parallel()
	dir := fleetDir(t)
	top := fleet(t)
	if _, err := projection.Write(dir, render(t, top, projection.Options{})); err != nil {
		t.Fatal(err)
	}
	names := top.NodeNames()
	args := []string{"nix", "build", "--offline", "--no-link", "--json", "--no-write-lock-file",
		"--override-input", "nixpkgs", "path:" + stubNixpkgs(t)}
	for _, name := range names {
		args = append(args, ".#nixosConfigurations."+name+".config.system.build.toplevel")
	}
	var built []struct {
		Outputs struct{ Out string }
	}
	if err := json.Unmarshal(nix(t, dir, args...), &built); err != nil || len(built) != len(names) {
		t.Fatalf("nix build: %v, %d results for %d nodes", err, len(built), len(names))
	}
	system := map[string]string{}
	for i, name := range names {
		system[name] = built[i].Outputs.Out
	}

	for _, name := range []string{"nats-1", "edge-2"} {
		conf := natsConf(t, system[name])
		cluster := conf["cluster"].(map[string]any)
		routes, _ := json.Marshal(cluster["routes"])
		wantCluster, wantRoutes := "cim-cluster", `["nats://10.0.0.41:6222","nats://10.0.0.42:6222","nats://10.0.0.43:6222"]`
		if name == "edge-2" {
			wantCluster, wantRoutes = "edge", `["nats://10.0.1.1:6222","nats://10.0.1.2:6222","nats://10.0.1.3:6222"]`
		}
		if cluster["name"] != wantCluster || string(routes) != wantRoutes {
			t.Errorf("%s: cluster %v, want %s routed to %s", name, cluster, wantCluster, wantRoutes)
		}
		leafnodes, hub := conf["leafnodes"].(map[string]any)
		if wantHub := name == "nats-1"; hub != wantHub || (hub && leafnodes["port"] != float64(7422)) {
			t.Errorf("%s: leafnodes %v, want a listener on :7422 only on the hub cim-cluster", name, conf["leafnodes"])
		}
	}

	leaf := natsConf(t, system["leaf-a2"])
	remotes, _ := json.Marshal(leaf["leafnodes"])
	if string(remotes) != `{"remotes":[{"urls":["nats-leaf://10.0.0.41:7422","nats-leaf://10.0.0.42:7422","nats-leaf://10.0.0.43:7422"]}]}` {
		t.Errorf("leaf-a2: leafnodes %s", remotes)
	}
	if js := leaf["jetstream"].(map[string]any); js["domain"] != "leaf-a2" || leaf["cluster"] != nil {
		t.Errorf("leaf-a2: jetstream %v, cluster %v: want its own domain and no cluster", js, leaf["cluster"])
	}
	for _, name := range []string{"cimstor", "ipfs-1"} {
		if conf := natsConf(t, system[name]); conf != nil {
			t.Errorf("%s runs NATS: %v", name, conf)
		}
	}
	t.Run("hub and leaf connect", func(t *testing.T) {
		hubAndLeafConnect(t, natsConf(t, system["nats-1"]), leaf)
	})

	// The firewall and the exporters of each role, evaluated from the same flake.
	apply := `builtins.mapAttrs (_: c: {
		ports = c.config.networking.firewall.allowedTCPPorts;
		nats = c.config.services.nats.enable;
		natsExporter = c.config.services.prometheus.exporters.nats.enable;
		nodeExporter = c.config.services.prometheus.exporters.node.enable;
	})`
	var got map[string]struct {
		Ports                            []int
		NATS, NATSExporter, NodeExporter bool
	}
	out := nix(t, dir, "nix", "eval", "--offline", "--json", "--no-write-lock-file",
		"--override-input", "nixpkgs", "path:"+stubNixpkgs(t), ".#nixosConfigurations", "--apply", apply)
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"nats-1": "[22 4222 6222 7422 7777 8222 9100] nats", "edge-2": "[22 4222 6222 7777 8222 9100] nats",
		"leaf-a1": "[22 4222 7777 8222 9100] nats", "cimstor": "[22 9100]", "ipfs-1": "[22 4001 9100]",
	} {
		g := got[name]
		line := fmt.Sprint(g.Ports)
		if g.NATS != g.NATSExporter {
			t.Errorf("%s: nats %v but its exporter %v", name, g.NATS, g.NATSExporter)
		}
		if g.NATS {
			line += " nats"
		}
		if line != want || !g.NodeExporter {
			t.Errorf("%s: %s (node exporter %v), want %s with the node exporter", name, line, g.NodeExporter, want)
		}
	}
}

// hubAndLeafConnect runs the built hub and leaf configurations with the real nats-server, moved to
// loopback and free ports (the hub alone, without its routes): the leaf's remote reaches the hub's
// leafnode listener, and both run JetStream, the leaf in its own domain.
func hubAndLeafConnect(t *testing.T, hub, leaf map[string]any) {
	// Addresses of their own on loopback, with the configured ports: a free port picked and released
	// can be taken by another process before nats-server binds it.
	hubAddr, leafAddr := loopbackAddr(), loopbackAddr()
	const clientPort, monitorPort, leafPort = 4222, 8222, 7422
	delete(hub, "cluster")
	delete(hub, "http_port")
	delete(leaf, "http_port")
	hub["host"], hub["port"], hub["http"] = hubAddr, clientPort, hubAddr+":"+strconv.Itoa(monitorPort)
	hub["leafnodes"] = map[string]any{"host": hubAddr, "port": leafPort}
	hub["jetstream"].(map[string]any)["store_dir"] = t.TempDir()
	leaf["host"], leaf["port"], leaf["http"] = leafAddr, clientPort, leafAddr+":"+strconv.Itoa(monitorPort)
	leaf["leafnodes"].(map[string]any)["remotes"].([]any)[0].(map[string]any)["urls"] = []string{fmt.Sprintf("nats-leaf://%s:%d", hubAddr, leafPort)}
	leaf["jetstream"].(map[string]any)["store_dir"] = t.TempDir()
	runNATS(t, hub)
	runNATS(t, leaf)

	// Each side lists the one leafnode connection (nats-server 2.9's /leafz has no server names).
	for _, addr := range []string{hubAddr, leafAddr} {
		var leafz struct {
			Leafs []struct{ Account string } `json:"leafs"`
		}
		poll(t, fmt.Sprintf("http://%s:%d/leafz", addr, monitorPort), &leafz, func() bool { return len(leafz.Leafs) == 1 })
	}
	var jsz struct {
		Config struct{ Domain string } `json:"config"`
	}
	poll(t, fmt.Sprintf("http://%s:%d/jsz", leafAddr, monitorPort), &jsz, func() bool { return jsz.Config.Domain != "" })
	if jsz.Config.Domain != "leaf-a2" {
		t.Errorf("the leaf's JetStream domain is %q", jsz.Config.Domain)
	}
}

// loopbackAddr is a random address of 127.200.0.0/16 (Linux answers on all of 127.0.0.0/8).
func loopbackAddr() string {
	return fmt.Sprintf("127.200.%d.%d", rand.IntN(256), 1+rand.IntN(254))
}

// runNATS runs nats-server with conf until the test ends.
func runNATS(t *testing.T, conf map[string]any) {
	t.Helper()
	data, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command("nats-server", "-c", path)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("nats-server %s:\n%s", conf["server_name"], log.String())
		}
	})
}

// poll reads url as JSON into v until done says so, for at most 20 seconds.
func poll(t *testing.T, url string, v any, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
			resp.Body.Close()
		}
		if err == nil && done() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not there after 20s (%v)", url, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestHubLeafnodePortAssertion: a module written by hand that moves a hub's leafnode listener onto the
// client port fails the build with the assertion naming both, as nats-server would fail at start.
func TestHubLeafnodePortAssertion(t *testing.T) {
	t.Parallel()
	dir := fleetDir(t)
	if _, err := projection.Write(dir, render(t, fleet(t), projection.Options{})); err != nil {
		t.Fatal(err)
	}
	flake := filepath.Join(dir, "flake.nix")
	data, err := os.ReadFile(flake)
	if err != nil {
		t.Fatal(err)
	}
	const entry = "nats-cluster = [ ./nixosModules/nats-cluster.nix ];"
	if !bytes.Contains(data, []byte(entry)) {
		t.Fatalf("flake.nix lacks %q", entry)
	}
	data = bytes.Replace(data, []byte(entry), []byte("nats-cluster = [ ./nixosModules/nats-cluster.nix ./by-hand.nix ];"), 1)
	must(t, os.WriteFile(flake, data, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "by-hand.nix"), []byte("{ lib, ... }: { services.nats.settings.leafnodes.port = lib.mkForce 4222; }\n"), 0o644))

	cmd := exec.CommandContext(t.Context(), "nix", "eval", "--offline", "--raw", "--no-write-lock-file",
		"--override-input", "nixpkgs", "path:"+stubNixpkgs(t), ".#nixosConfigurations.nats-1.config.system.build.toplevel.drvPath")
	cmd.Dir = dir
	cmd.Env = nixrunner.Environ(nil, nixrunner.OfflineConfig+"eval-cache = false\n") // flakes evaluated at once: no shared evaluation cache
	out, err := cmd.CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("services.nats.port = 4222, services.nats.settings.leafnodes.port = 4222")) {
		t.Fatalf("nix eval = %v, want the port assertion:\n%s", err, out)
	}
}
