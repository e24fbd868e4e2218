package events_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// TestLoadRefusesWhatItMustNotRead is the table of hostile events directories: each is refused with a
// problem naming the path, without reading what lies outside the directory, without blocking and
// without reading more than the limits.
func TestLoadRefusesWhatItMustNotRead(t *testing.T) {
	t.Parallel()
	const secret = "the content of a file outside the events directory"
	good := env("1", "a", "DomainCreated")
	tests := []struct {
		name   string
		limits events.Limits
		setup  func(t *testing.T, dir string) // dir holds 0001.json, a good event
		want   []string
	}{
		{
			name: "event file linked to a file outside",
			setup: func(t *testing.T, dir string) {
				outside := filepath.Join(t.TempDir(), "secret.json")
				write(t, outside, secret)
				symlink(t, outside, filepath.Join(dir, "0002.json"))
			},
			want: []string{"0002.json: a symbolic link"},
		},
		{
			name: "event file linked relatively out of the directory",
			setup: func(t *testing.T, dir string) {
				symlink(t, "../../../../../../../../etc/passwd", filepath.Join(dir, "0002.json"))
			},
			want: []string{"0002.json: a symbolic link"},
		},
		{
			name:  "event file linked to /dev/zero",
			setup: func(t *testing.T, dir string) { symlink(t, "/dev/zero", filepath.Join(dir, "0002.ndjson")) },
			want:  []string{"0002.ndjson: a symbolic link"},
		},
		{
			name:  "event file linked to /dev/stdin",
			setup: func(t *testing.T, dir string) { symlink(t, "/dev/stdin", filepath.Join(dir, "0002.json")) },
			want:  []string{"0002.json: a symbolic link"},
		},
		{
			name: "subdirectory linked to a directory outside",
			setup: func(t *testing.T, dir string) {
				outside := t.TempDir()
				write(t, filepath.Join(outside, "0002.json"), secret)
				symlink(t, outside, filepath.Join(dir, "more"))
			},
			want: []string{"more: a symbolic link"},
		},
		{
			name: "FIFO",
			setup: func(t *testing.T, dir string) {
				if err := syscall.Mkfifo(filepath.Join(dir, "0002.json"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"0002.json: not a regular file (a FIFO)"},
		},
		{
			name: "socket",
			setup: func(t *testing.T, dir string) {
				fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer syscall.Close(fd)
				if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: filepath.Join(dir, "s.json")}); err != nil {
					t.Fatal(err) // a path over 108 bytes (unix(7)) would need a shorter TMPDIR
				}
			},
			want: []string{"s.json: not a regular file (a socket)"},
		},
		{
			name: "directory where an event file is expected",
			setup: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "0002.json", "0003.json"), env("2", "b", "NodeAdded"))
			},
			want: []string{"0002.json: a directory where an event file is expected"},
		},
		{
			name: "file over the limit",
			setup: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "0002.ndjson"), strings.Repeat(" ", events.MaxFileSize+1))
			},
			want: []string{"0002.ndjson: larger than 1 MiB (a limit of cimdeploy for one event file)"},
		},
		{
			name:   "file over a lower limit",
			limits: events.Limits{FileSize: 100},
			setup:  func(t *testing.T, dir string) {},
			want:   []string{"0001.json: larger than 100 bytes"},
		},
		{
			name:   "directory over the total limit",
			limits: events.Limits{TotalSize: 3 * int64(len(good))},
			setup: func(t *testing.T, dir string) {
				for i, name := range []string{"0002.json", "0003.json", "0004.json"} {
					write(t, filepath.Join(dir, name), env(string(rune('2'+i)), string(rune('b'+i)), "NodeAdded"))
				}
			},
			want: []string{"0004.json: the event files are larger than", "together (a limit of cimdeploy): reading stopped at this file"},
		},
		{
			name:   "too many files",
			limits: events.Limits{Files: 2},
			setup: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "0002.json"), env("2", "b", "NodeAdded"))
				write(t, filepath.Join(dir, "sub", "0003.json"), env("3", "c", "NodeAdded"))
			},
			want: []string{"more than 2 event files (a limit of cimdeploy)"},
		},
		{
			name:   "too many entries",
			limits: events.Limits{Entries: 3},
			setup: func(t *testing.T, dir string) {
				for _, name := range []string{"a.md", "b.md", "c.md"} {
					write(t, filepath.Join(dir, name), "notes")
				}
			},
			want: []string{"more than 3 entries under the events directory"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			write(t, filepath.Join(dir, "0001.json"), good)
			tt.setup(t, dir)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			done := make(chan events.Problems, 1)
			go func() {
				_, problems := tt.limits.Load(ctx, dir)
				done <- problems
			}()
			var problems events.Problems
			select {
			case problems = <-done:
			case <-ctx.Done():
				t.Fatal("Load did not return: it blocks on what it must not read")
			}
			if ctx.Err() != nil {
				t.Fatalf("Load returned only when its context ended: %v", problems)
			}
			got := problems.Error()
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("problems do not mention %q:\n%s", w, got)
				}
			}
			if !strings.Contains(got, dir) {
				t.Errorf("problems do not name the path under %s:\n%s", dir, got)
			}
			if strings.Contains(got, secret) || strings.Contains(got, "root:") {
				t.Errorf("problems hold the content of a file outside the directory:\n%s", got)
			}
		})
	}
}

func TestLoadRefusesALinkedEventsDirectory(t *testing.T) {
	t.Parallel()
	real := t.TempDir()
	write(t, filepath.Join(real, "0001.json"), env("1", "a", "DomainCreated"))
	link := filepath.Join(t.TempDir(), "events")
	symlink(t, real, link)
	_, problems := events.Load(t.Context(), link)
	if got := problems.Error(); !strings.Contains(got, link+": a symbolic link where the events directory is expected") {
		t.Errorf("got %s", got)
	}
	_, problems = events.Load(t.Context(), filepath.Join(t.TempDir(), "missing"))
	if got := problems.Error(); !strings.Contains(got, "missing: the events directory does not exist: no such file or directory") {
		t.Errorf("got %s", got)
	}
}

// TestLoadStopsWhenItsContextEnds: a cancelled load says so, and the cause is reachable with errors.Is
// (an interrupt exits 130, not 1).
func TestLoadStopsWhenItsContextEnds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for i := range 50 {
		write(t, filepath.Join(dir, strings.Repeat("x", i+1)+".json"), env("1", "a", "DomainCreated"))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, problems := events.Load(ctx, dir)
	if !errors.Is(problems, context.Canceled) {
		t.Fatalf("errors.Is(problems, context.Canceled) = false: %v", problems)
	}
	if len(problems) != 1 {
		t.Errorf("a cancelled load reports one problem, got %d:\n%v", len(problems), problems)
	}
}

// TestLoadReadsRegularFilesUpToTheLimit: a file of exactly the limit is read.
func TestLoadReadsRegularFilesUpToTheLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ev := env("1", "a", "DomainCreated")
	write(t, filepath.Join(dir, "0001.ndjson"), ev+"\n"+strings.Repeat(" ", 4096-len(ev)-1))
	evs, problems := events.Limits{FileSize: 4096}.Load(t.Context(), dir)
	if len(problems) > 0 || len(evs) != 1 {
		t.Fatalf("got %d events, %v", len(evs), problems)
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
