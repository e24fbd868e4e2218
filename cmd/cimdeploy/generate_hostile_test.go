package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGenerateRefusesHostileEvents runs `cimdeploy generate` on events directories a hostile commit
// could hold: each fails with exit 1 and a short error naming the path, promptly, without reading
// through a link.
func TestGenerateRefusesHostileEvents(t *testing.T) {
	t.Parallel()
	giant := strings.Repeat("a", 700<<10)
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string // in stderr, after the events directory's path
	}{
		{
			name:  "event file linked to /dev/zero",
			setup: func(t *testing.T, dir string) { mustSymlink(t, "/dev/zero", filepath.Join(dir, "0010.ndjson")) },
			want:  "0010.ndjson: a symbolic link",
		},
		{
			name: "event file linked out of the directory",
			setup: func(t *testing.T, dir string) {
				mustSymlink(t, "../../../../../../../etc/hostname", filepath.Join(dir, "0010.json"))
			},
			want: "0010.json: a symbolic link",
		},
		{
			name: "FIFO",
			setup: func(t *testing.T, dir string) {
				if err := syscall.Mkfifo(filepath.Join(dir, "0010.json"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: "0010.json: not a regular file (a FIFO)",
		},
		{
			name: "a node name of 700 KB",
			setup: func(t *testing.T, dir string) {
				// A sequence far after the fixtures', whatever their number: the gap is a problem too.
				ev := `{"event_id":"e999","aggregate_id":"nats-4","sequence":999,"timestamp":"2025-12-01T09:00:00Z",` +
					`"event_type":"NodeAdded","data":{"name":"` + giant + `"}}`
				if err := os.WriteFile(filepath.Join(dir, "0999.json"), []byte(ev), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: `0999.json:1: event 999 (e999): data.name: "aaaa`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "events")
			copyFixtures(t, dir)
			tt.setup(t, dir)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := run(ctx, []string{"generate", "--events", dir, "--out", t.TempDir()}, &stdout, &stderr)
			if ctx.Err() != nil {
				t.Fatalf("generate returned only when its context ended (exit %d)", code)
			}
			if code != exitFailed {
				t.Errorf("exit %d, want %d\n%s", code, exitFailed, stderr.String())
			}
			if !strings.Contains(stderr.String(), filepath.Join(dir, tt.want)) {
				t.Errorf("stderr does not name %q:\n%.3000s", filepath.Join(dir, tt.want), stderr.String())
			}
			if n := stdout.Len() + stderr.Len(); n > 4096 {
				t.Errorf("%d bytes of output: a value is echoed whole\n%.3000s", n, stderr.String())
			}
		})
	}
}

// TestGenerateInterrupted: an interrupt while reading the events exits 130, not 1.
func TestGenerateInterrupted(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "events")
	copyFixtures(t, dir)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"generate", "--events", dir, "--out", t.TempDir()}, &stdout, &stderr); code != exitCanceled {
		t.Errorf("exit %d, want %d\n%s", code, exitCanceled, stderr.String())
	}
}

func copyFixtures(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(fixtures, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
