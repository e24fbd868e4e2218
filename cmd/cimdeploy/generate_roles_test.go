package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// roleEvents is an events directory: the fixtures' cluster (the first nine events) and a node ipfs-1 of
// the repository role ipld-storage, whose module is nixosModules/ipld-storage.nix.
func roleEvents(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries[:9] {
		data, err := os.ReadFile(filepath.Join(fixtures, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	event := func(seq int, typ, agg, data string) {
		ev := fmt.Sprintf(`{"event_id":"roles-%d","aggregate_id":%q,"sequence":%d,"timestamp":"2026-01-02T00:00:00Z",`+
			`"correlation_id":"roles","causation_id":"roles","event_type":%q,"data":%s}`, seq, agg, seq, typ, data)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%04d-%s.json", seq, agg)), []byte(ev), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	event(10, "RoleDefined", "ipld-storage", `{"name":"ipld-storage","module":"nixosModules/ipld-storage.nix"}`)
	event(11, "NodeAdded", "ipfs-1", `{"name":"ipfs-1","role":"ipld-storage","system":"x86_64-linux","state_version":"25.05",`+
		`"proxmox":{"host":"pve1","vmid":310,"cores":1,"memory_mib":1024,"storage":"local-lvm","bridge":"vmbr0"},`+
		`"interfaces":[{"name":"eth0","interface_type":"ethernet","addresses":[{"address":"10.0.1.10","prefix_length":19}]}]}`)
	return dir
}

// TestGenerateRepositoryModule: generate refuses a repository role's module that is missing or a link
// out of the repository, naming the RoleDefined event and the path, writes nothing then, and never
// touches the module once it is there.
func TestGenerateRepositoryModule(t *testing.T) {
	t.Parallel()
	evs := roleEvents(t)
	out := t.TempDir()
	module := filepath.Join(out, "nixosModules", "ipld-storage.nix")

	code, _, stderr := runCLI(t, "generate", "--events", evs, "--out", out)
	if code != exitInfra || !strings.Contains(stderr, `the RoleDefined event of role "ipld-storage" names module nixosModules/ipld-storage.nix, which is not in the repository`) {
		t.Fatalf("generate without the module = %d\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "flake.nix")); err == nil {
		t.Error("flake.nix written despite the missing module")
	}

	outside := filepath.Join(t.TempDir(), "elsewhere.nix")
	os.WriteFile(outside, []byte("{ }\n"), 0o644)
	os.MkdirAll(filepath.Dir(module), 0o755)
	if err := os.Symlink(outside, module); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, "generate", "--events", evs, "--out", out, "--check")
	if code != exitInfra || !strings.Contains(stderr, "nixosModules/ipld-storage.nix is a symlink") {
		t.Fatalf("generate --check with a linked module = %d\n%s", code, stderr)
	}

	os.Remove(module)
	const text = "{ ... }: { networking.firewall.allowedTCPPorts = [ 4001 ]; }\n"
	os.WriteFile(module, []byte(text), 0o644)
	code, stdout, stderr := runCLI(t, "generate", "--events", evs, "--out", out)
	if code != exitOK || strings.Contains(stdout, "ipld-storage.nix") {
		t.Fatalf("generate = %d\n%s%s", code, stdout, stderr)
	}
	if data, _ := os.ReadFile(module); string(data) != text {
		t.Errorf("the module was changed: %q", data)
	}
	flake, _ := os.ReadFile(filepath.Join(out, "flake.nix"))
	if !strings.Contains(string(flake), "ipld-storage = [ ./nixosModules/common.nix ./nixosModules/ipld-storage.nix ];") {
		t.Errorf("flake.nix does not import the module:\n%s", flake)
	}
}
