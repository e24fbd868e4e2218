package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

func addNixFlags(f *pflag.FlagSet, c *nixrunner.Config) {
	f.StringVar(&c.Nix, "nix", c.Nix, "nix executable or the directory holding it [CIMDEPLOY_NIX_BIN]")
	f.BoolVar(&c.Offline, "nix-offline", c.Offline, "no binary caches, no downloads [CIMDEPLOY_NIX_OFFLINE]")
	f.Var(&mapValue{m: &c.OverrideInputs}, "override-input", "input=flakeref, repeatable: replace a flake input [CIMDEPLOY_NIX_OVERRIDE_INPUTS]")
	f.DurationVar(&c.Timeout, "nix-timeout", c.Timeout, "bound on every nix call [CIMDEPLOY_NIX_TIMEOUT]")
}

func addStoreFlags(f *pflag.FlagSet, c *store.Config) {
	f.StringVar(&c.DataDir, "data-dir", c.DataDir, "state directory: embedded NATS, cached clones, workspaces, logs [CIMDEPLOY_DATA_DIR]")
	f.StringVar(&c.URL, "nats-url", c.URL, "external NATS cluster instead of the embedded server [CIMDEPLOY_NATS_URL]")
	f.StringVar(&c.CredsFile, "nats-creds-file", c.CredsFile, "credentials file for --nats-url [CIMDEPLOY_NATS_CREDS_FILE]")
}

// mapValue is a repeatable name=value flag.
type mapValue struct{ m *map[string]string }

func (v *mapValue) String() string {
	if v.m == nil || *v.m == nil {
		return ""
	}
	keys := make([]string, 0, len(*v.m))
	for k := range *v.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + (*v.m)[k]
	}
	return strings.Join(parts, ",")
}

func (v *mapValue) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q is not name=value", s)
	}
	if *v.m == nil {
		*v.m = map[string]string{}
	}
	(*v.m)[name] = value
	return nil
}

func (v *mapValue) Type() string { return "name=ref" }
