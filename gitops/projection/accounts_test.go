package projection_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// natsSettings evaluates services.nats.settings of the generated module for node with real Nix and
// adds what NixOS' nats module adds to them (server_name, port, jetstream.store_dir from its dataDir;
// nixos/modules/services/networking/nats.nix), as the JSON file the module writes: the configuration
// `nats-server -t` checks at build time.
func natsSettings(t *testing.T, top *topology.Topology, node string) []byte {
	t.Helper()
	dir := t.TempDir()
	if _, err := projection.Write(dir, render(t, top, projection.Options{})); err != nil {
		t.Fatal(err)
	}
	expr := `(import ./` + projection.ModuleFile + ` {
		config.networking.hostName = "` + node + `";
		lib.mkForce = v: v;
		pkgs = { };
	}).services.nats.settings`
	var settings map[string]any
	if err := json.Unmarshal(nix(t, dir, "nix", "eval", "--json", "--impure", "--expr", expr), &settings); err != nil {
		t.Fatal(err)
	}
	settings["server_name"] = node
	settings["port"] = top.Services.NATS.ClientPort
	settings["jetstream"].(map[string]any)["store_dir"] = filepath.Join(t.TempDir(), "jetstream")
	// As Nix's builtins.toJSON writes it: nats-server reads no \u escapes, which encoding/json uses for <, > and &.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(settings); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// natsCheck runs the real `nats-server -t` on a configuration, as the build does.
func natsCheck(t *testing.T, conf []byte) (string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), "nats-server", "-t", "-c", path).CombinedOutput()
	return string(out), err
}

func TestAccountsConfigIsValid(t *testing.T) {
	t.Parallel()
	top := production(t)
	conf := natsSettings(t, top, "nats-1")
	out, err := natsCheck(t, conf)
	if err != nil || !strings.Contains(out, "is valid") {
		t.Fatalf("nats-server -t: %v\n%s\n%s", err, out, conf)
	}
	var got struct {
		SystemAccount string `json:"system_account"`
		Accounts      map[string]struct {
			JetStream any `json:"jetstream"`
			Users     []struct {
				NKey string `json:"nkey"`
			} `json:"users"`
			Imports []map[string]any `json:"imports"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal(conf, &got); err != nil {
		t.Fatal(err)
	}
	if got.SystemAccount != "SYS" || len(got.Accounts["SYS"].Users) != 1 || len(got.Accounts["billing"].Users) != 2 || len(got.Accounts["billing"].Imports) != 1 {
		t.Errorf("settings = %s", conf)
	}
	if got.Accounts["SYS"].JetStream != nil {
		t.Errorf("the system account has JetStream: %s", conf)
	}
	if seed := regexp.MustCompile(`"S[A-Z2-7]{57}"`).Find(conf); seed != nil {
		t.Errorf("settings hold an nkey seed")
	}
}

// TestAccountsConfigCheckCatchesErrors makes sure the check above can fail: a user whose key nats-server
// does not take is refused.
func TestAccountsConfigCheckCatchesErrors(t *testing.T) {
	t.Parallel()
	top := production(t)
	billing := top.Accounts.Domains["billing"]
	billing.Users[0].NKey = "not-a-key"
	conf := natsSettings(t, top, "nats-1")
	if out, err := natsCheck(t, conf); err == nil {
		t.Fatalf("nats-server -t accepted a bad nkey:\n%s", out)
	}
}

// TestAccountsEscaping: subjects are the events' own text; Nix reads back exactly what they say.
func TestAccountsEscaping(t *testing.T) {
	t.Parallel()
	evs, problems := events.Load(t.Context(), "../../fixtures/events")
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	hostile := `cim.${builtins.abort"x"}."q\'';`
	data, err := json.Marshal(map[string]any{"domain": "cim", "kind": "service", "subject": hostile})
	if err != nil {
		t.Fatal(err)
	}
	evs = append(evs, events.Event{EventID: "hostile", AggregateID: "cim", Sequence: uint64(len(evs) + 1),
		Timestamp: evs[0].Timestamp, Type: events.DomainExportDefined, Data: data})
	top, problems := topology.Fold(evs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	var settings struct {
		Accounts map[string]struct {
			Exports []map[string]string `json:"exports"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal(natsSettings(t, top, "nats-2"), &settings); err != nil {
		t.Fatal(err)
	}
	exports := settings.Accounts["cim"].Exports
	if len(exports) != 2 || exports[1]["service"] != hostile {
		t.Errorf("exports %v, want the service %q", exports, hostile)
	}
}
