package nix

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The module is evaluated as a NixOS system would use it: a flake takes this repository's flake as an
// input, with its nixpkgs following the lab's stand-in for nixpkgs (strict: an undeclared option, a
// mistyped value or a failed assertion is an error, worded as nixpkgs words it), and imports
// nixosModules.default. The stand-in has no buildGoModule, so the package is a small derivation with
// bin/cimdeploy.
const systemFlake = `{
  inputs.nixpkgs.url = "path:@STUB@";
  inputs.cimdeploy.url = "path:@FLAKE@";
  inputs.cimdeploy.inputs.nixpkgs.follows = "nixpkgs";
  outputs = { self, nixpkgs, cimdeploy }:
    let
      sys = nixpkgs.lib.nixosSystem {
        system = "x86_64-linux";
        modules = [ cimdeploy.nixosModules.default ./package.nix ./case.nix ];
      };
      inherit (sys) config;
    in {
      toplevel = config.system.build.toplevel;
      result = {
        package = config.services.cimdeploy.package.outPath;
        unit = config.systemd.services.cimdeploy;
        ports = config.networking.firewall.allowedTCPPorts;
        users = config.users.users;
        groups = config.users.groups;
        toplevel = config.system.build.toplevel.drvPath;
      };
    };
}
`

const fakePackage = `{ pkgs, ... }: {
  services.cimdeploy.package = pkgs.runCommand "cimdeploy-test" { } ''
    mkdir -p "$out/bin"
    printf '#!/bin/sh\necho cimdeploy test\n' > "$out/bin/cimdeploy"
    chmod 0555 "$out/bin/cimdeploy"
  '';
}
`

// minimal is a configuration the module accepts; the failing cases change one setting of it.
const minimal = `{ lib, ... }: {
  boot.isContainer = true;
  system.stateVersion = "25.11";
  services.cimdeploy = {
    enable = true;
    repo = lib.mkDefault "https://github.com/acme/infra.git";
    githubRepository = lib.mkDefault "acme/infra";
    webhookSecretFile = lib.mkDefault "/run/keys/webhook-secret";
    githubTokenFile = lib.mkDefault "/run/keys/github-token";
  };
}
`

// systemDir writes the system flake for one case (a NixOS module) and returns its directory.
func systemDir(t *testing.T, caseModule string, extra map[string]string) string {
	t.Helper()
	flake := t.TempDir()
	copyTree(t, repoRoot, flake, func(rel string, d fs.DirEntry) bool {
		// This flake's own files: flake.nix and nix/ (the package's source is not evaluated here).
		return rel != "flake.nix" && rel != "nix" && !strings.HasPrefix(rel, "nix/")
	})
	stub, err := filepath.Abs(filepath.Join(repoRoot, "fixtures", "lab", "nixpkgs"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"flake.nix":   strings.NewReplacer("@STUB@", stub, "@FLAKE@", flake).Replace(systemFlake),
		"package.nix": fakePackage,
		"case.nix":    caseModule,
	}
	for k, v := range extra {
		files[k] = v
	}
	writeFiles(t, dir, files)
	return dir
}

type evalResult struct {
	Package string `json:"package"`
	Unit    struct {
		Description   string            `json:"description"`
		WantedBy      []string          `json:"wantedBy"`
		After         []string          `json:"after"`
		Environment   map[string]string `json:"environment"`
		ServiceConfig map[string]any    `json:"serviceConfig"`
	} `json:"unit"`
	Ports []int `json:"ports"`
	Users map[string]struct {
		IsSystemUser bool   `json:"isSystemUser"`
		Group        string `json:"group"`
		Home         string `json:"home"`
	} `json:"users"`
	Groups   map[string]any `json:"groups"`
	Toplevel string         `json:"toplevel"`
}

// TestModuleTypicalService evaluates nix/tests/service.nix (what the flake's checks build on real
// NixOS) and checks the unit: how cimdeploy is started, every setting as its CIMDEPLOY_* variable,
// every secret as a credential, the hardening, the user and the firewall. The system's toplevel is
// then built, so the rendered unit file is checked too.
func TestModuleTypicalService(t *testing.T) {
	t.Parallel()
	requirePrograms(t, "nix")
	service, err := os.ReadFile(filepath.Join("tests", "service.nix"))
	if err != nil {
		t.Fatal(err)
	}
	dir := systemDir(t, `{ imports = [ ./service.nix ]; }`, map[string]string{"service.nix": string(service)})
	out, stderr, err := run(t.Context(), dir, "nix", "eval", "--json", "--no-write-lock-file", ".#result")
	if err != nil {
		t.Fatalf("nix eval: %v\n%s", err, stderr)
	}
	if strings.Contains(stderr, "evaluation warning") || strings.Contains(stderr, "trace: warning") {
		t.Errorf("the typical configuration prints a warning:\n%s", stderr)
	}
	var r evalResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("nix eval output: %v\n%s", err, out)
	}
	sc, env := r.Unit.ServiceConfig, r.Unit.Environment

	if want := r.Package + "/bin/cimdeploy serve"; sc["ExecStart"] != want {
		t.Errorf("ExecStart = %v, want %q", sc["ExecStart"], want)
	}
	if !slices.Contains(r.Unit.WantedBy, "multi-user.target") || !slices.Contains(r.Unit.After, "network-online.target") {
		t.Errorf("wantedBy %v, after %v: want multi-user.target, after network-online.target", r.Unit.WantedBy, r.Unit.After)
	}

	// Every option of tests/service.nix, as the variable cimdeploy serve reads.
	wantEnv := map[string]string{
		"CIMDEPLOY_DATA_DIR":                    "/var/lib/cimdeploy",
		"CIMDEPLOY_LISTEN":                      "0.0.0.0:8420",
		"CIMDEPLOY_REPO":                        "https://github.com/acme/infra.git",
		"CIMDEPLOY_GITHUB_REPOSITORY":           "acme/infra",
		"CIMDEPLOY_DEPLOY_BRANCH":               "production",
		"CIMDEPLOY_PUBLIC_URL":                  "https://cimdeploy.example.com",
		"CIMDEPLOY_GITHUB_API_URL":              "https://github.example.com/api/v3/",
		"CIMDEPLOY_GITHUB_ENVIRONMENT":          "production",
		"CIMDEPLOY_GITHUB_APP_ID":               "4242",
		"CIMDEPLOY_GITHUB_APP_INSTALLATION_ID":  "77",
		"CIMDEPLOY_TRUSTED_SIGNERS":             "/etc/cimdeploy/allowed_signers",
		"CIMDEPLOY_REQUIRE_APPROVAL":            "true",
		"CIMDEPLOY_LXC_BUILDER":                 "nixpkgs",
		"CIMDEPLOY_CLOSURE_COPY":                "export",
		"CIMDEPLOY_NATS_URL":                    "nats://nats-1.example.com:4222",
		"CIMDEPLOY_SSH_USER":                    "deploy",
		"CIMDEPLOY_SSH_PORT":                    "2222",
		"CIMDEPLOY_SSH_KNOWN_HOSTS":             "/etc/cimdeploy/known_hosts",
		"CIMDEPLOY_SSH_JUMP":                    "bastion.example.com",
		"CIMDEPLOY_PROXMOX_HOST":                "pve1.example.com",
		"CIMDEPLOY_PROXMOX_STORAGE":             "local",
		"CIMDEPLOY_TIMEOUT_ROLLOUT":             "3h",
		"CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE":  "%d/webhook-secret",
		"CIMDEPLOY_GITHUB_APP_PRIVATE_KEY_FILE": "%d/github-app-key",
		"CIMDEPLOY_SSH_KEY_FILE":                "%d/ssh-key",
		"CIMDEPLOY_NATS_CREDS_FILE":             "%d/nats-creds",
		"HOME":                                  "/var/lib/cimdeploy",
	}
	for k, want := range wantEnv {
		if env[k] != want {
			t.Errorf("Environment %s = %q, want %q", k, env[k], want)
		}
	}
	for _, k := range []string{"CIMDEPLOY_GITHUB_TOKEN_FILE", "CIMDEPLOY_NATS_LISTEN", "CIMDEPLOY_LOG_LEVEL"} {
		if v, ok := env[k]; ok {
			t.Errorf("Environment sets %s = %q for an option left unset", k, v)
		}
	}
	if nixBin := env["CIMDEPLOY_NIX_BIN"]; !strings.HasPrefix(nixBin, "/nix/store/") || !strings.HasSuffix(nixBin, "/bin/nix") {
		t.Errorf("CIMDEPLOY_NIX_BIN = %q, want the system's nix", nixBin)
	}
	if !strings.Contains(env["PATH"], "-git-") || !strings.Contains(env["PATH"], "-nix-") || strings.Contains(env["PATH"], "-openssh-") {
		t.Errorf("PATH = %q, want nix and git (a workspace is a git+file: flake), no OpenSSH", env["PATH"])
	}
	// Secrets reach the service as credentials only: no variable names the host's file.
	for k, v := range env {
		if strings.Contains(v, "/run/keys") {
			t.Errorf("Environment %s = %q names a secret's file on the host; want %%d/<credential>", k, v)
		}
	}
	wantCreds := []any{
		"github-app-key:/run/keys/cimdeploy/github-app.pem",
		"nats-creds:/run/keys/cimdeploy/nats.creds",
		"ssh-key:/run/keys/cimdeploy/ssh-key",
		"webhook-secret:/run/keys/cimdeploy/webhook-secret",
	}
	if got, _ := sc["LoadCredential"].([]any); !slices.Equal(got, wantCreds) {
		t.Errorf("LoadCredential = %v, want %v", sc["LoadCredential"], wantCreds)
	}

	// Every CIMDEPLOY_* variable the module sets is one cimdeploy reads.
	known := cimdeployVariables(t)
	for k := range env {
		if strings.HasPrefix(k, "CIMDEPLOY_") && !known[k] {
			t.Errorf("Environment sets %s, which no env tag of cimdeploy's Go code reads", k)
		}
	}

	for key, want := range map[string]any{
		"User":                    "cimdeploy",
		"Group":                   "cimdeploy",
		"StateDirectory":          "cimdeploy",
		"StateDirectoryMode":      "0700",
		"WorkingDirectory":        "/var/lib/cimdeploy",
		"UMask":                   "0077",
		"ProtectSystem":           "strict",
		"ProtectHome":             true,
		"PrivateTmp":              true,
		"PrivateDevices":          true,
		"NoNewPrivileges":         true,
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"RestrictNamespaces":      true,
		"RestrictSUIDSGID":        true,
		"LockPersonality":         true,
		"MemoryDenyWriteExecute":  true,
		"ProtectKernelTunables":   true,
		"ProtectKernelModules":    true,
		"ProtectControlGroups":    true,
		"SystemCallArchitectures": "native",
		"Restart":                 "on-failure",
	} {
		if sc[key] != want {
			t.Errorf("serviceConfig.%s = %#v, want %#v", key, sc[key], want)
		}
	}
	if _, dynamic := sc["DynamicUser"]; dynamic {
		t.Errorf("serviceConfig.DynamicUser is set; the module runs as the static user cimdeploy")
	}
	if got, _ := sc["RestrictAddressFamilies"].([]any); !slices.Equal(got, []any{"AF_UNIX", "AF_INET", "AF_INET6"}) {
		t.Errorf("RestrictAddressFamilies = %v, want AF_UNIX (the nix daemon), AF_INET, AF_INET6", sc["RestrictAddressFamilies"])
	}
	if got, _ := sc["SystemCallFilter"].([]any); !slices.Contains(got, any("@system-service")) {
		t.Errorf("SystemCallFilter = %v, want @system-service", sc["SystemCallFilter"])
	}

	if !slices.Equal(r.Ports, []int{8420}) {
		t.Errorf("networking.firewall.allowedTCPPorts = %v, want [8420] (openFirewall, the port of listen)", r.Ports)
	}
	u, ok := r.Users["cimdeploy"]
	if !ok || !u.IsSystemUser || u.Group != "cimdeploy" || u.Home != "/var/lib/cimdeploy" {
		t.Errorf("users.users.cimdeploy = %+v (declared %v), want a system user in group cimdeploy, home /var/lib/cimdeploy", u, ok)
	}
	if _, ok := r.Groups["cimdeploy"]; !ok {
		t.Errorf("users.groups.cimdeploy is not declared")
	}

	// The unit file of the built system.
	out, stderr, err = run(t.Context(), dir, "nix", "build", "--no-write-lock-file", "--no-link", "--json", ".#toplevel")
	if err != nil {
		t.Fatalf("nix build .#toplevel: %v\n%s", err, stderr)
	}
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(out), &built); err != nil || len(built) != 1 || built[0].Outputs["out"] == "" {
		t.Fatalf("nix build --json printed %s (%v), want one derivation's out", out, err)
	}
	unit, err := os.ReadFile(filepath.Join(built[0].Outputs["out"], "etc", "systemd", "system", "cimdeploy.service"))
	if err != nil {
		t.Fatalf("the toplevel has no cimdeploy unit: %v", err)
	}
	for _, line := range []string{
		"ExecStart=" + r.Package + "/bin/cimdeploy serve",
		"LoadCredential=github-app-key:/run/keys/cimdeploy/github-app.pem nats-creds:/run/keys/cimdeploy/nats.creds ssh-key:/run/keys/cimdeploy/ssh-key webhook-secret:/run/keys/cimdeploy/webhook-secret",
		"ProtectSystem=strict",
		"CapabilityBoundingSet=",
		"WantedBy=multi-user.target",
	} {
		if !slices.Contains(strings.Split(string(unit), "\n"), line) {
			t.Errorf("cimdeploy.service lacks the line %q:\n%s", line, unit)
		}
	}
	if !strings.Contains(string(unit), `"CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE=%d/webhook-secret"`) {
		t.Errorf("cimdeploy.service does not pass the webhook secret's credential path:\n%s", unit)
	}
}

// cimdeployVariables are the CIMDEPLOY_* variables cimdeploy reads: the env tags of its Go code, and
// CIMDEPLOY_LOG_LEVEL (read by the CLI's root command).
func cimdeployVariables(t *testing.T) map[string]bool {
	t.Helper()
	tag := regexp.MustCompile(`env:"(CIMDEPLOY_[A-Z0-9_]+)`)
	vars := map[string]bool{"CIMDEPLOY_LOG_LEVEL": true}
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != repoRoot && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range tag.FindAllStringSubmatch(string(src), -1) {
			vars[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !vars["CIMDEPLOY_LISTEN"] || !vars["CIMDEPLOY_SSH_KEY_FILE"] {
		t.Fatalf("found %d variables in the Go code, not CIMDEPLOY_LISTEN and CIMDEPLOY_SSH_KEY_FILE", len(vars))
	}
	return vars
}

// TestModuleRejectsBadSettings evaluates configurations the module must refuse, each with the message
// an operator sees: its own assertions (the checks `cimdeploy serve` would otherwise fail at start)
// and the module system's (an undeclared option, a secret given as a Nix path, which would copy it into
// the world-readable store).
func TestModuleRejectsBadSettings(t *testing.T) {
	t.Parallel()
	requirePrograms(t, "nix")
	for _, tc := range []struct {
		name     string
		settings string // inside services.cimdeploy, over `minimal`
		want     []string
	}{
		{
			name:     "listen without port",
			settings: `listen = "127.0.0.1";`,
			want:     []string{"Failed assertions:", "services.cimdeploy.listen `127.0.0.1' must be host:port with a port number (CIMDEPLOY_LISTEN)."},
		},
		{
			name:     "listen port out of range",
			settings: `listen = "[::]:99999";`,
			want:     []string{"services.cimdeploy.listen `[::]:99999' must be host:port with a port number"},
		},
		{
			name:     "github repository not owner/name",
			settings: `githubRepository = "infra";`,
			want:     []string{"services.cimdeploy.githubRepository `infra' must be OWNER/NAME (CIMDEPLOY_GITHUB_REPOSITORY)."},
		},
		{
			name:     "no webhook secret",
			settings: `webhookSecretFile = lib.mkForce null;`,
			want:     []string{"services.cimdeploy.webhookSecretFile is required: serve accepts only signed deliveries"},
		},
		{
			name:     "token and app",
			settings: `githubApp = { id = 1; installationId = 2; privateKeyFile = "/run/keys/app.pem"; };`,
			want:     []string{"services.cimdeploy: set githubTokenFile or githubApp, not both"},
		},
		{
			name:     "app without its key",
			settings: `githubTokenFile = lib.mkForce null; githubApp = { id = 1; installationId = 2; };`,
			want:     []string{"services.cimdeploy.githubApp needs id, installationId and privateKeyFile together"},
		},
		{
			name:     "nats credentials without nats url",
			settings: `natsCredsFile = "/run/keys/nats.creds";`,
			want:     []string{"services.cimdeploy.natsCredsFile is for an external NATS: set natsUrl too"},
		},
		{
			name:     "secret as a nix path",
			settings: `webhookSecretFile = ./case.nix;`,
			want:     []string{"A definition for option `services.cimdeploy.webhookSecretFile' is not of type `null or string matching the pattern /.+'"},
		},
		{
			name:     "undeclared option",
			settings: `listenAddress = "0.0.0.0";`,
			want:     []string{"The option `services.cimdeploy.listenAddress' does not exist."},
		},
		{
			name:     "unknown lxc builder",
			settings: `lxcBuilder = "docker";`,
			want:     []string{"A definition for option `services.cimdeploy.lxcBuilder' is not of type"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			caseModule := "{ lib, ... }: { imports = [ ./minimal.nix ]; services.cimdeploy = { " + tc.settings + " }; }\n"
			dir := systemDir(t, caseModule, map[string]string{"minimal.nix": minimal})
			out, stderr, err := run(t.Context(), dir, "nix", "eval", "--raw", "--no-write-lock-file", ".#result.toplevel")
			if err == nil {
				t.Fatalf("the module accepts %s: %s", tc.settings, out)
			}
			got := squeeze(stderr)
			for _, want := range tc.want {
				if !strings.Contains(got, squeeze(want)) {
					t.Errorf("nix's error lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

// TestModuleNixCopyOnPort443: closures copied by nix copy put OpenSSH on the service's PATH, and a
// listener on a port below 1024 keeps CAP_NET_BIND_SERVICE, the one capability it needs.
func TestModuleNixCopyOnPort443(t *testing.T) {
	t.Parallel()
	requirePrograms(t, "nix")
	caseModule := `{ lib, ... }: { imports = [ ./minimal.nix ]; services.cimdeploy = { closureCopy = "nix-copy"; listen = "[::]:443"; openFirewall = true; }; }`
	dir := systemDir(t, caseModule, map[string]string{"minimal.nix": minimal})
	out, stderr, err := run(t.Context(), dir, "nix", "eval", "--json", "--no-write-lock-file", ".#result")
	if err != nil {
		t.Fatalf("nix eval: %v\n%s", err, stderr)
	}
	var r evalResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("nix eval output: %v\n%s", err, out)
	}
	env, sc := r.Unit.Environment, r.Unit.ServiceConfig
	if env["CIMDEPLOY_CLOSURE_COPY"] != "nix-copy" || !strings.Contains(env["PATH"], "-openssh-") {
		t.Errorf("CIMDEPLOY_CLOSURE_COPY = %q, PATH = %q: want nix-copy with OpenSSH on PATH", env["CIMDEPLOY_CLOSURE_COPY"], env["PATH"])
	}
	for _, key := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		if got, _ := sc[key].([]any); !slices.Equal(got, []any{"CAP_NET_BIND_SERVICE"}) {
			t.Errorf("serviceConfig.%s = %#v, want [CAP_NET_BIND_SERVICE] for port 443", key, sc[key])
		}
	}
	if !slices.Equal(r.Ports, []int{443}) {
		t.Errorf("allowedTCPPorts = %v, want [443]", r.Ports)
	}
}

// TestModuleWarnings: settings that work but are likely mistakes evaluate, with a warning.
func TestModuleWarnings(t *testing.T) {
	t.Parallel()
	requirePrograms(t, "nix")
	for _, tc := range []struct {
		name, settings, want string
	}{
		{
			name:     "no github credentials",
			settings: `githubTokenFile = lib.mkForce null;`,
			want:     "services.cimdeploy: neither githubTokenFile nor githubApp is set: runs are not reported to GitHub",
		},
		{
			name:     "firewall opened for loopback",
			settings: `openFirewall = true;`,
			want:     "services.cimdeploy.openFirewall opens port 8420, but listen `127.0.0.1:8420' is a loopback address.",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			caseModule := "{ lib, ... }: { imports = [ ./minimal.nix ]; services.cimdeploy = { " + tc.settings + " }; }\n"
			dir := systemDir(t, caseModule, map[string]string{"minimal.nix": minimal})
			out, stderr, err := run(t.Context(), dir, "nix", "eval", "--raw", "--no-write-lock-file", ".#result.toplevel")
			if err != nil {
				t.Fatalf("nix eval: %v\n%s", err, stderr)
			}
			if !strings.HasSuffix(out, ".drv") {
				t.Errorf("toplevel = %q, want a derivation", out)
			}
			if !strings.Contains(squeeze(stderr), squeeze(tc.want)) {
				t.Errorf("no warning %q:\n%s", tc.want, stderr)
			}
		})
	}
}

// squeeze collapses runs of white space: nix indents the continuation lines of an error.
func squeeze(s string) string { return strings.Join(strings.Fields(s), " ") }
