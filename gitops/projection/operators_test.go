package projection_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// withoutOperators is the production topology before its OperatorAdded events.
func withoutOperators(t *testing.T) *topology.Topology {
	t.Helper()
	evs, problems := events.Load(t.Context(), "../../fixtures/events")
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	var kept []events.Event
	for _, ev := range evs {
		if ev.Type != events.OperatorAdded {
			kept = append(kept, ev)
		}
	}
	top, problems := topology.Fold(kept)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	return top
}

func fileOf(t *testing.T, files []projection.File, path string) string {
	t.Helper()
	for _, f := range files {
		if f.Path == path {
			return string(f.Data)
		}
	}
	t.Fatalf("no %s", path)
	return ""
}

// TestNoOperatorsNoHomeManager: without a domain admin the flake has no home-manager input and the
// module no accounts.
func TestNoOperatorsNoHomeManager(t *testing.T) {
	t.Parallel()
	files := render(t, withoutOperators(t), projection.Options{})
	if flake := fileOf(t, files, projection.FlakeFile); strings.Contains(flake, "home-manager") {
		t.Errorf("flake.nix names home-manager without a domain admin:\n%s", flake)
	}
	if module := fileOf(t, files, projection.ModuleFile); strings.Contains(module, "users.users") || strings.Contains(module, "home-manager") {
		t.Errorf("module has accounts without operators:\n%s", module)
	}
}

// TestOperatorsEvaluate reads the users and the domain admin's Home Manager environment back with real
// `nix eval` of the module (called with stand-ins for config, lib and pkgs).
func TestOperatorsEvaluate(t *testing.T) {
	t.Parallel()
	top := production(t)
	dir := t.TempDir()
	if _, err := projection.Write(dir, render(t, top, projection.Options{HomeManagerURL: "github:example/home-manager"})); err != nil {
		t.Fatal(err)
	}
	expr := `let m = import ./` + projection.CommonModuleFile + ` {
		config.networking.hostName = "nats-1";
		lib.mkForce = v: v;
		pkgs = { natscli = "natscli"; nsc = "nsc"; jq = "jq"; };
	}; in { users = m.users.users; hm = m.home-manager; }`
	var got struct {
		Users map[string]struct {
			IsNormalUser bool     `json:"isNormalUser"`
			ExtraGroups  []string `json:"extraGroups"`
			OpenSSH      struct {
				AuthorizedKeys struct {
					Keys []string `json:"keys"`
				} `json:"authorizedKeys"`
			} `json:"openssh"`
		}
		HM struct {
			UseGlobalPkgs bool `json:"useGlobalPkgs"`
			Users         map[string]struct {
				Home struct {
					Username, HomeDirectory, StateVersion string
					Packages                              []string
				}
				Programs struct {
					Bash struct {
						Enable       bool
						ShellAliases map[string]string
					}
				}
			}
		}
	}
	if err := json.Unmarshal(nix(t, dir, "nix", "eval", "--json", "--impure", "--expr", expr), &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Users["deploy"]; ok {
		t.Errorf("the deployer is a user of its own; its key belongs to root")
	}
	if keys := got.Users["root"].OpenSSH.AuthorizedKeys.Keys; len(keys) != 1 || keys[0] != top.Operators["deploy"].Keys[0] {
		t.Errorf("root's keys %q, want the deployer's", keys)
	}
	if u := got.Users["ops"]; !u.IsNormalUser || strings.Join(u.ExtraGroups, ",") != "wheel" || len(u.OpenSSH.AuthorizedKeys.Keys) != 1 {
		t.Errorf("ops (domain-admin) = %+v, want a normal user in wheel with its key", u)
	}
	if u := got.Users["alice"]; !u.IsNormalUser || len(u.ExtraGroups) != 0 {
		t.Errorf("alice (viewer) = %+v, want a normal user outside wheel", u)
	}
	hm := got.HM.Users["ops"]
	if !got.HM.UseGlobalPkgs || hm.Home.Username != "ops" || hm.Home.HomeDirectory != "/home/ops" || hm.Home.StateVersion != "25.05" ||
		strings.Join(hm.Home.Packages, ",") != "natscli,nsc,jq" || !hm.Programs.Bash.Enable {
		t.Errorf("home-manager = %+v", got.HM)
	}
	const urls = "nats://10.0.0.41:4222,nats://10.0.0.42:4222,nats://10.0.0.43:4222"
	if a := hm.Programs.Bash.ShellAliases["domain-events"]; a != "nats --server '"+urls+"' sub 'cim.>'" {
		t.Errorf("domain-events = %q", a)
	}
	if a := hm.Programs.Bash.ShellAliases["domain-status"]; a != "nats --server '"+urls+"' stream report" {
		t.Errorf("domain-status = %q", a)
	}
}
