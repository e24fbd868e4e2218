package remote

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNixProgram: the controller's nix-store and nix come from the Nix that CIMDEPLOY_NIX_BIN names (a
// directory or an executable), or from PATH for the default "nix".
func TestNixProgram(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "nix")
	if err := os.WriteFile(exe, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		nix, name, want string
	}{
		{nix: "", name: "nix-store", want: "nix-store"},
		{nix: "nix", name: "nix-store", want: "nix-store"},
		{nix: dir, name: "nix-store", want: filepath.Join(dir, "nix-store")},
		{nix: dir, name: "nix", want: exe},
		{nix: exe, name: "nix-store", want: filepath.Join(dir, "nix-store")},
		{nix: exe, name: "nix", want: exe},
	} {
		if got := nixProgram(tc.nix, tc.name); got != tc.want {
			t.Errorf("nixProgram(%q, %q) = %q, want %q", tc.nix, tc.name, got, tc.want)
		}
	}
}
