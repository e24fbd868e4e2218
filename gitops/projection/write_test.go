package projection

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func set(version string) []File {
	return []File{
		{Path: "flake.nix", Data: []byte("# flake " + version + "\n")},
		{Path: "topology.nix", Data: []byte("# topology " + version + "\n")},
		{Path: "nixosModules/nats-cluster.nix", Data: []byte("# module " + version + "\n")},
	}
}

// readSet returns the version every file of the set has, failing the test on a mix.
func readSet(t *testing.T, dir string) string {
	t.Helper()
	version := ""
	for _, f := range set("") {
		data, err := os.ReadFile(filepath.Join(dir, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		fields := strings.Fields(string(data))
		v := fields[len(fields)-1]
		if version != "" && v != version {
			t.Fatalf("%s is at %s, another file at %s: a mixed set", f.Path, v, version)
		}
		version = v
	}
	return version
}

// secretDir is a directory outside the projection's with a file whose content must never show.
func secretDir(t *testing.T) (dir, secret string) {
	t.Helper()
	dir = t.TempDir()
	secret = "cimdeploy-test-secret-7f3a"
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, secret
}

func TestWriteNeverGoesThroughALink(t *testing.T) {
	t.Parallel()
	outside, secret := secretDir(t)
	tests := []struct {
		name  string
		plant func(t *testing.T, dir string)
		names string // the path the error names
	}{
		{"module directory linked outside", func(t *testing.T, dir string) {
			os.Symlink(outside, filepath.Join(dir, "nixosModules"))
		}, "nixosModules is a symlink"},
		{"file linked to a secret", func(t *testing.T, dir string) {
			os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "topology.nix"))
		}, "topology.nix is a symlink"},
		{"relative link", func(t *testing.T, dir string) {
			rel, _ := filepath.Rel(dir, filepath.Join(outside, "secret"))
			os.Symlink(rel, filepath.Join(dir, "flake.nix"))
		}, "flake.nix is a symlink"},
		{"FIFO", func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "topology.nix"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "topology.nix is not a regular file"},
		{"device", func(t *testing.T, dir string) {
			os.Symlink("/dev/zero", filepath.Join(dir, "topology.nix"))
		}, "topology.nix is a symlink"},
		{"directory where a file belongs", func(t *testing.T, dir string) {
			os.Mkdir(filepath.Join(dir, "flake.nix"), 0o755)
		}, "flake.nix is not a regular file"},
		{"huge file", func(t *testing.T, dir string) {
			f, err := os.Create(filepath.Join(dir, "topology.nix"))
			if err != nil {
				t.Fatal(err)
			}
			f.Truncate(MaxFileSize + 1) // sparse: no disk used
			f.Close()
		}, "topology.nix is over 16777216 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tt.plant(t, dir)
			before, _ := os.ReadDir(outside)
			for name, op := range map[string]func() (string, error){
				"Diff": func() (string, error) { return Diff(dir, set("v1")) },
				"Write": func() (string, error) {
					changed, err := Write(dir, set("v1"))
					return strings.Join(changed, ","), err
				},
			} {
				done := make(chan struct{})
				var out string
				var err error
				go func() { out, err = op(); close(done) }()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatalf("%s blocked", name)
				}
				if !errors.Is(err, ErrUnsafePath) || !strings.Contains(err.Error(), tt.names) {
					t.Errorf("%s = %q, %v; want an unsafe path error naming %q", name, out, err, tt.names)
				}
				if strings.Contains(out, secret) || err != nil && strings.Contains(err.Error(), secret) {
					t.Errorf("%s showed the secret", name)
				}
			}
			after, _ := os.ReadDir(outside)
			if len(after) != len(before) {
				t.Errorf("files appeared outside: %v", after)
			}
			if data, _ := os.ReadFile(filepath.Join(outside, "secret")); string(data) != secret {
				t.Error("the secret was overwritten")
			}
		})
	}
}

func TestWriteIsOneSet(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "new") // made by Write
	if _, err := Write(dir, set("v1")); err != nil {
		t.Fatal(err)
	}
	if v := readSet(t, dir); v != "v1" {
		t.Fatalf("set %s", v)
	}

	// Killed after staging, before the manifest: the old set stays, the temporary files go.
	for _, f := range set("v2") {
		p := filepath.Join(dir, filepath.Dir(f.Path), "."+filepath.Base(f.Path)+tmpMarker+"123")
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := Recover(dir); err != nil {
		t.Fatal(err)
	}
	if v := readSet(t, dir); v != "v1" {
		t.Fatalf("after a kill before the manifest: set %s, want v1", v)
	}
	assertNoTemporaries(t, dir)

	// Killed after the manifest and the first rename: the next Write finishes the set before its own.
	var stage []staged
	for _, f := range set("v3") {
		tmp := filepath.ToSlash(filepath.Join(filepath.Dir(f.Path), "."+filepath.Base(f.Path)+tmpMarker+"456"))
		if err := os.WriteFile(filepath.Join(dir, tmp), f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		stage = append(stage, staged{Tmp: tmp, Dst: f.Path})
	}
	if err := writeManifest(dir, manifest{Files: stage}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, stage[0].Tmp), filepath.Join(dir, stage[0].Dst)); err != nil {
		t.Fatal(err)
	}
	if diff, err := Diff(dir, set("v3")); err != nil || diff == "" {
		t.Fatalf("a half-renamed set shows no drift: %v", err)
	}
	changed, err := Write(dir, set("v3"))
	if err != nil || len(changed) != 0 {
		t.Fatalf("Write = %v, %v; want the recovered set unchanged", changed, err)
	}
	if v := readSet(t, dir); v != "v3" {
		t.Fatalf("after recovery: set %s, want v3", v)
	}
	if _, err := os.Stat(filepath.Join(dir, manifestName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("manifest left: %v", err)
	}
	assertNoTemporaries(t, dir)

	// A manifest naming a path outside is refused, not followed.
	if err := os.WriteFile(filepath.Join(dir, manifestName), []byte(`{"files":[{"tmp":"../x.cimdeploy-tmp-1","dst":"flake.nix"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Recover(dir); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Recover of a manifest pointing outside = %v", err)
	}
}

func assertNoTemporaries(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{dir, filepath.Join(dir, "nixosModules")} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.Contains(e.Name(), tmpMarker) {
				t.Errorf("temporary file left: %s", filepath.Join(d, e.Name()))
			}
		}
	}
}
