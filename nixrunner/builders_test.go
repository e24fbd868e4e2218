package nixrunner

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildersValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(key, []byte("PRIVATE KEY MATERIAL\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	machines := filepath.Join(dir, "machines")
	if err := os.WriteFile(machines, []byte("ssh-ng://b1 x86_64-linux\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostKey := base64.StdEncoding.EncodeToString([]byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJP1FMa2ys+FlOOUSyYMg4aInxa7S/hSRU3u6GzuTmZl"))
	good := []Builders{
		"ssh-ng://root@builder",
		"ssh://builder x86_64-linux,aarch64-linux " + Builders(key) + " 4 2 kvm,big-parallel - " + Builders(hostKey),
		"ssh-ng://b1 x86_64-linux - 2 ; ssh-ng://b2?remote-program=/run/current-system/sw/bin/nix-daemon x86_64-linux",
		"ssh-ng://b1\nssh-ng://b2\n",
		"@" + Builders(machines),
		"",
	}
	for _, b := range good {
		if err := b.Validate(); err != nil {
			t.Errorf("Validate(%q) = %v", b, err)
		}
	}
	for _, c := range []struct {
		b    Builders
		want string
	}{
		{"http://builder", "entry 1: URI: \"http://builder\": want ssh://"},
		{"ssh-ng://", "entry 1: URI: \"ssh-ng://\" names no host"},
		{"ssh-ng://b1 ; builder", "entry 2: URI"},
		{"ssh-ng://b x86_64", "entry 1: systems: \"x86_64\" is no system"},
		{"ssh-ng://b x86_64-linux relative/key", "entry 1: SSH key: \"relative/key\" is not an absolute path"},
		{"ssh-ng://b x86_64-linux /no/such/key", "entry 1: SSH key: stat /no/such/key"},
		{"ssh-ng://b x86_64-linux - 0", "entry 1: max jobs: \"0\": want a positive number"},
		{"ssh-ng://b x86_64-linux - 1 fast", "entry 1: speed factor"},
		{"ssh-ng://b x86_64-linux - 1 1 - - bm90IGEga2V5", "entry 1: host key: not the base64 of an OpenSSH public key line"},
		{"ssh-ng://b a-b - 1 1 - - - extra", "entry 1: fields: 9 fields, at most 8"},
		{"@machines", "entry 1: machines file: \"machines\" is not an absolute path"},
		{"@/no/such/machines", "entry 1: machines file: stat /no/such/machines"},
	} {
		err := c.b.Validate()
		if err == nil || !strings.Contains(err.Error(), "CIMDEPLOY_NIX_BUILDERS: "+c.want) {
			t.Errorf("Validate(%q) = %v, want %q", c.b, err, c.want)
		}
	}
	// A problem names the key file, never what is in it.
	err := Builders("ssh-ng://b x86_64-linux " + key + " x").Validate()
	if err == nil || strings.Contains(err.Error(), "PRIVATE") {
		t.Errorf("Validate = %v", err)
	}
}

func TestConfigBuildersAndMaxJobs(t *testing.T) {
	t.Parallel()
	c := Config{Offline: true, Builders: "ssh-ng://b1 x86_64-linux\nssh-ng://b2 x86_64-linux", MaxJobs: "0"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := OfflineConfig + "builders = ssh-ng://b1 x86_64-linux ; ssh-ng://b2 x86_64-linux\nbuilders-use-substitutes = true\nmax-jobs = 0\n"
	if got := c.nixConfig(); got != want {
		t.Errorf("nixConfig() = %q, want %q", got, want)
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{MaxJobs: "0"}, "CIMDEPLOY_NIX_MAX_JOBS 0 builds only on remote builders, and CIMDEPLOY_NIX_BUILDERS names none"},
		{Config{MaxJobs: "-1", Builders: "ssh-ng://b"}, `CIMDEPLOY_NIX_MAX_JOBS: "-1"`},
		{Config{MaxJobs: "many"}, `CIMDEPLOY_NIX_MAX_JOBS: "many"`},
	} {
		if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
	if err := (Config{MaxJobs: "auto"}).Validate(); err != nil {
		t.Errorf("max-jobs auto: %v", err)
	}
}
