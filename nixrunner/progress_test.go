package nixrunner

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pmezard/go-difflib/difflib"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// parsed is what the golden files hold for one recorded stderr stream.
type parsed struct {
	Events      []Progress `json:"events"`
	LastLines   []string   `json:"last_lines"`
	BuildFailed bool       `json:"build_failed"`
	Cause       string     `json:"cause"`
	// The kinds classify gives a call that exited with status 1 after this stream.
	KindBuild      string `json:"kind_build_exit_1"`
	KindFlakeCheck string `json:"kind_flake_check_exit_1"`
}

// TestParserGolden feeds recorded nix stderr streams (testdata/*.log) through the lineWriter in small
// chunks into the logParser and compares events, last lines and classification with
// testdata/*.golden.json (go test ./nixrunner -update rewrites them). The nix-2.8-* streams were recorded
// from Debian's nix-bin 2.8.0, the nix-2.26-* streams from Debian trixie's 2.26.3 (.ci/nix-trixie) with
// testdata/record.sh, which makes the same five flakes; synthetic-cannot-build.log is hand-written after the newer Nix error format
// ("Cannot build '…'. Reason: …", NixOS/nix#13509) with no failed count in the builds activity, so only
// the message tells it is a build failure, and it holds lines that are not internal-json.
// nix-2.8-remote-build.log is nix build of one derivation with --max-jobs 0 on a remote builder (the
// lab's builder host: an sshd with its own store), its URI replaced by ssh-ng://root@builder: the build
// activity names the machine (Progress.Machine), and the output is copied back.
func TestParserGolden(t *testing.T) {
	t.Parallel()
	logs, err := filepath.Glob(filepath.Join("testdata", "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(logs) < 5 {
		t.Fatalf("found %d recorded logs in testdata, want at least 5", len(logs))
	}
	for _, path := range logs {
		name := strings.TrimSuffix(filepath.Base(path), ".log")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			stream, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var got parsed
			p := newLogParser(func(ev Progress) { got.Events = append(got.Events, ev) })
			w := &lineWriter{line: p.line}
			for chunk := range chunks(stream, 7) {
				if n, err := w.Write(chunk); n != len(chunk) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			w.flush()
			got.LastLines, got.BuildFailed, got.Cause = p.lastLines(), p.buildFailed, p.cause
			got.KindBuild = classify(opBuild, nil, 1, p.buildFailed).String()
			got.KindFlakeCheck = classify(opFlakeCheck, nil, 1, p.buildFailed).String()
			compareGolden(t, filepath.Join("testdata", name+".golden.json"), got)
		})
	}
}

// chunks cuts b into pieces of n bytes, so lines arrive split across writes.
func chunks(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			k := min(n, len(b))
			if !yield(b[:k]) {
				return
			}
			b = b[k:]
		}
	}
}

func compareGolden(t *testing.T, path string, got any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(got); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	if *update {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./nixrunner -update to write it)", err)
	}
	if !bytes.Equal(want, data) {
		diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(string(want)), B: difflib.SplitLines(string(data)),
			FromFile: path, ToFile: "got", Context: 3,
		})
		t.Errorf("parsed stream differs from %s (go test ./nixrunner -update rewrites it):\n%s", path, diff)
	}
}

func TestLineWriter(t *testing.T) {
	t.Parallel()
	var got []string
	w := &lineWriter{line: func(l string) { got = append(got, l) }}
	long := strings.Repeat("x", maxLine+3)
	for _, s := range []string{"a", "b\nc\n", "\n", long, "\nd"} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	w.flush()
	want := []string{"ab", "c", "", long[:maxLine], "xxx", "d"}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %.20q (len %d), want %.20q (len %d)", i, got[i], len(got[i]), want[i], len(want[i]))
		}
	}
}

func TestParserKeepsLastLines(t *testing.T) {
	t.Parallel()
	p := newLogParser(nil)
	for i := range lastLinesCap + 5 {
		p.line(string(rune('a'+i%26)) + " plain")
	}
	last := p.lastLines()
	if len(last) != lastLinesCap || last[0] != "f plain" {
		t.Errorf("lastLines = %q, want %d lines from \"f plain\"", last, lastLinesCap)
	}
}

// TestParserKeepsTheCause: the line that says what went wrong stays in LastLines however long the trace
// around it, whether it comes first (Nix 2.8) or last after a bare "error:" and a trace (Nix 2.26).
func TestParserKeepsTheCause(t *testing.T) {
	t.Parallel()
	trace := strings.Repeat("       … while evaluating something\n         at /nix/store/x-source/flake.nix:9:1:\n", lastLinesCap)
	for _, tc := range []struct {
		name, msg, want string
	}{
		{name: "nix-2.8", msg: "error: attribute 'x' missing\n" + trace, want: "error: attribute 'x' missing"},
		{name: "nix-2.26", msg: "error:\n" + trace + "\n       error: attribute 'x' missing", want: "       error: attribute 'x' missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newLogParser(nil)
			raw, err := json.Marshal(map[string]any{"action": "msg", "level": 0, "msg": tc.msg})
			if err != nil {
				t.Fatal(err)
			}
			p.line("@nix " + string(raw))
			last := p.lastLines()
			if !slices.Contains(last, tc.want) {
				t.Errorf("lastLines = %q, want them to hold %q", last, tc.want)
			}
			if last[0] == "error:" {
				t.Errorf("lastLines start with a bare \"error:\": %q", last)
			}
		})
	}
}
