package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunLog(t *testing.T) {
	logs := filepath.Join(t.TempDir(), "logs")
	if err := os.MkdirAll(logs, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("not for the dashboard\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := func(id string) string { return filepath.Join(logs, id+".log") }
	write := func(id, text string) {
		t.Helper()
		if err := os.WriteFile(logFile(id), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var long strings.Builder
	for i := 0; long.Len() < 2*logTailBytes; i++ {
		fmt.Fprintf(&long, "build nats-1 | line %06d of the build\n", i)
	}
	long.WriteString("build nats-1 | \x1b[31;1merror:\x1b[0m <script>x</script> \xff the end\n")
	write("long", long.String())
	write("short", "one line\n")
	if err := os.Symlink(secret, logFile("link")); err != nil {
		t.Fatal(err)
	}

	mux := http.NewServeMux()
	pages{logFile: logFile, logger: slog.New(slog.DiscardHandler)}.register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}

	resp, body := get("/runs/long/log")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("GET long log: %s, Content-Type %q, nosniff %q", resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("X-Content-Type-Options"))
	}
	first, rest, _ := strings.Cut(body, "\n")
	var cut int
	if _, err := fmt.Sscanf(first, "[%d earlier bytes not shown]", &cut); err != nil || cut < logTailBytes {
		t.Errorf("first line %q: want how much was left out (more than %d bytes)", first, logTailBytes)
	}
	if len(rest) > logTailBytes || cut+len(rest) != long.Len()-len("\x1b[31;1m\x1b[0m")+len("\uFFFD")-1 {
		t.Errorf("tail of %d bytes, %d cut, of a %d-byte log: want at most %d bytes, the rest accounted for", len(rest), cut, long.Len(), logTailBytes)
	}
	if !strings.HasPrefix(rest, "build nats-1 | line ") {
		t.Errorf("tail starts mid-line: %.60q", rest)
	}
	if want := "build nats-1 | error: <script>x</script> \uFFFD the end\n"; !strings.HasSuffix(rest, want) {
		t.Errorf("tail ends %q, want %q (escapes gone, valid UTF-8)", rest[len(rest)-60:], want)
	}

	if resp, body := get("/runs/short/log"); resp.StatusCode != http.StatusOK || body != "one line\n" {
		t.Errorf("GET short log: %s %q", resp.Status, body)
	}
	for _, path := range []string{"/runs/none/log", "/runs/link/log", "/runs/a.b/log", "/runs/..%2f..%2fsecret/log", "/runs/%2e%2e/log"} {
		if resp, body := get(path); resp.StatusCode != http.StatusNotFound || strings.Contains(body, "not for the dashboard") {
			t.Errorf("GET %s: %s %q, want 404", path, resp.Status, body)
		}
	}
}
