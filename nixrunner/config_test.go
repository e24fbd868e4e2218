package nixrunner

import (
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
)

func TestConfigFromEnvironment(t *testing.T) {
	t.Parallel()
	var cfg Config
	err := envconfig.ProcessWith(t.Context(), &envconfig.Config{
		Target: &cfg,
		Lookuper: envconfig.MapLookuper(map[string]string{
			"CIMDEPLOY_NIX_OFFLINE":         "true",
			"CIMDEPLOY_NIX_OVERRIDE_INPUTS": "nixpkgs=path:/srv/nixpkgs?narHash=x,dep/sub=git+file:///srv/dep",
			"CIMDEPLOY_NIX_TIMEOUT":         "5m",
			"CIMDEPLOY_NIX_EXTRA_CONFIG":    "max-jobs = 2",
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Nix: "nix", Offline: true, ExtraConfig: "max-jobs = 2", Timeout: 5 * time.Minute, KillGrace: DefaultKillGrace,
		OverrideInputs: map[string]string{"nixpkgs": "path:/srv/nixpkgs?narHash=x", "dep/sub": "git+file:///srv/dep"},
	}
	if cfg.Nix != want.Nix || cfg.Offline != want.Offline || cfg.ExtraConfig != want.ExtraConfig ||
		cfg.Timeout != want.Timeout || cfg.KillGrace != want.KillGrace || len(cfg.OverrideInputs) != 2 ||
		cfg.OverrideInputs["nixpkgs"] != want.OverrideInputs["nixpkgs"] ||
		cfg.OverrideInputs["dep/sub"] != want.OverrideInputs["dep/sub"] {
		t.Errorf("config from environment = %+v, want %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
	if got := cfg.nixConfig(); got != OfflineConfig+"max-jobs = 2\n" {
		t.Errorf("nixConfig() = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	err := Config{
		Timeout:        -time.Second,
		KillGrace:      -time.Second,
		OverrideInputs: map[string]string{"bad name": "path:/x", "empty": " "},
	}.Validate()
	if err == nil {
		t.Fatal("Validate accepted a broken config")
	}
	for _, want := range []string{"CIMDEPLOY_NIX_TIMEOUT", "CIMDEPLOY_NIX_KILL_GRACE", `"bad name"`, `"empty"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q does not name %s", err, want)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("the zero Config is invalid: %v", err)
	}
	if d := (Config{}).withDefaults(); d.Nix != "nix" || d.Timeout != DefaultTimeout || d.KillGrace != DefaultKillGrace {
		t.Errorf("defaults = %+v", d)
	}
}

func TestEnviron(t *testing.T) {
	t.Parallel()
	got := Environ([]string{"A=1", "NIX_CONFIG=sandbox = true", "B=2"}, "sandbox = false\n")
	want := []string{"A=1", "B=2", "NIX_CONFIG=sandbox = true\nsandbox = false\n"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Environ = %q, want %q", got, want)
	}
}

func TestParseVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		out, want string
		ok        bool
	}{
		{out: "nix (Nix) 2.8.0\n", want: "2.8.0", ok: true},
		{out: "nix (Nix) 2.24.10\n", want: "2.24.10", ok: true},
		{out: "nix (Lix, like Nix) 2.91.1\n", want: "2.91.1", ok: true},
		{out: "nix (Nix) 2.31pre20250101_abcdef\n", want: "2.31pre20250101_abcdef", ok: true},
		{out: "nix (Nix) 2.3.16\n"},
		{out: ""},
		{out: "garbage"},
	} {
		got, err := parseVersion(tc.out)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseVersion(%q) = %q, %v; want %q, ok %v", tc.out, got, err, tc.want, tc.ok)
		}
	}
}
