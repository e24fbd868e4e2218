package nixtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeNix writes a nix that prints "nix (Nix) <version>" into a directory of its own.
func fakeNix(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\necho 'nix (Nix) " + version + "'\n"
	if err := os.WriteFile(filepath.Join(dir, "nix"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestVersions(t *testing.T) {
	old, newer := fakeNix(t, "2.8.0"), fakeNix(t, "2.26.3")
	trixie := t.TempDir()
	if err := os.Symlink(newer, filepath.Join(trixie, "bin")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		ci      bool
		want    []string // versions
		wantErr string
	}{
		{
			name: "listed, directories and executables, duplicates once",
			env:  map[string]string{Env: old + ":" + filepath.Join(newer, "nix") + ":" + old},
			want: []string{"nix (Nix) 2.8.0", "nix (Nix) 2.26.3"},
		},
		{
			name:    "a listed nix that is missing",
			env:     map[string]string{Env: filepath.Join(t.TempDir(), "nix")},
			wantErr: Env,
		},
		{
			name: "default: PATH's and the cached trixie Nix",
			env:  map[string]string{"PATH": old, TrixieDirEnv: trixie},
			want: []string{"nix (Nix) 2.8.0", "nix (Nix) 2.26.3"},
		},
		{
			name: "default without the trixie Nix: PATH's alone",
			env:  map[string]string{"PATH": old, TrixieDirEnv: t.TempDir()},
			want: []string{"nix (Nix) 2.8.0"},
		},
		{
			name:    "default in CI without the trixie Nix: an error naming the script",
			env:     map[string]string{"PATH": old, TrixieDirEnv: t.TempDir()},
			ci:      true,
			wantErr: ".ci/nix-trixie",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(Env, "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			got, err := Versions(tc.ci)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Versions = %v, %v; want an error naming %s", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var versions []string
			for _, n := range got {
				versions = append(versions, n.Version)
				if _, err := os.Stat(filepath.Join(n.Dir, "nix")); err != nil {
					t.Errorf("%s: no nix in %s: %v", n.Version, n.Dir, err)
				}
			}
			if strings.Join(versions, ",") != strings.Join(tc.want, ",") {
				t.Errorf("versions = %q, want %q", versions, tc.want)
			}
		})
	}
}

func TestWithFlags(t *testing.T) {
	args := []string{"-test.v=true", "-test.run=^TestX$"}
	got := withFlags(args, []string{"-test.run=^TestNix", "-test.skip=^TestShims$"})
	want := []string{"-test.v=true", "-test.run=^TestX$", "-test.skip=^TestShims$"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("withFlags = %q, want %q (the command line's -run wins)", got, want)
	}
}
