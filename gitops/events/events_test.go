package events_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// tree writes files (slash-separated names relative to the directory) into a new directory.
func tree(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func env(seq, id, typ string) string {
	return `{"event_id":"` + id + `","aggregate_id":"cim","sequence":` + seq +
		`,"timestamp":"2025-11-20T10:00:00Z","correlation_id":"c","causation_id":"c","event_type":"` + typ + `","data":{}}`
}

func TestLoadFixtures(t *testing.T) {
	t.Parallel()
	evs, problems := events.Load(t.Context(), "../../fixtures/events")
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if len(evs) != 12 {
		t.Fatalf("got %d events, want 12", len(evs))
	}
	for i, ev := range evs {
		if ev.Sequence != uint64(i+1) {
			t.Errorf("event %d has sequence %d", i, ev.Sequence)
		}
		if !strings.HasPrefix(ev.Source.File, "../../fixtures/events/") {
			t.Errorf("event %d source %q does not name its file", i, ev.Source.File)
		}
	}
}

func TestLoadNDJSONAndFilesMix(t *testing.T) {
	t.Parallel()
	dir := tree(t, map[string]string{
		"0001.json":      env("1", "a", "DomainCreated"),
		"log/2-3.ndjson": env("2", "b", "NodeAdded") + "\n\n" + env("3", "c", "NodeAdded") + "\n",
		"README.md":      "not an event",
	})
	evs, problems := events.Load(t.Context(), dir)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if len(evs) != 3 || evs[2].EventID != "c" || evs[2].Source.Line != 3 {
		t.Fatalf("got %+v", evs)
	}
}

// TestProblems is the table of every envelope and log problem: each is reported with its location,
// and all of them in one run.
func TestProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of Problems.Error(), each must appear
	}{
		{
			name:  "bad JSON names line and column",
			files: map[string]string{"0001.json": "{\n  \"event_id\": \"a\",\n  \"sequence\": 1,,\n}"},
			want:  []string{"0001.json:3:17: bad JSON: invalid character ','"},
		},
		{
			name:  "bad JSON in NDJSON names the line",
			files: map[string]string{"log.ndjson": env("1", "a", "DomainCreated") + "\n{\"event_id\": tru}\n"},
			want:  []string{"log.ndjson:2:", "bad JSON"},
		},
		{
			name:  "truncated file",
			files: map[string]string{"0001.json": `{"event_id": "a"`},
			want:  []string{"0001.json:1:", "unexpected end of input"},
		},
		{
			name:  "wrong type names the field",
			files: map[string]string{"0001.json": strings.Replace(env("1", "a", "DomainCreated"), `"sequence":1`, `"sequence":"one"`, 1)},
			want:  []string{"0001.json:1:", "sequence: bad JSON: string where uint64 is expected"},
		},
		{
			name:  "unknown envelope field",
			files: map[string]string{"0001.json": strings.Replace(env("1", "a", "DomainCreated"), `"data"`, `"payload":{},"data"`, 1)},
			want:  []string{`unknown field "payload"`},
		},
		{
			name:  "unknown event type",
			files: map[string]string{"0001.json": env("1", "a", "NodeExploded")},
			want:  []string{`0001.json:1: event 1 (a): event_type: unknown event type "NodeExploded"`},
		},
		{
			name:  "missing envelope fields",
			files: map[string]string{"0001.json": `{"sequence":1,"event_type":"DomainCreated","data":{}}`},
			want:  []string{"event_id, aggregate_id, timestamp: missing or empty"},
		},
		{
			name:  "data not an object",
			files: map[string]string{"0001.json": strings.Replace(env("1", "a", "DomainCreated"), `"data":{}`, `"data":[1]`, 1)},
			want:  []string{"data: must be a JSON object"},
		},
		{
			name: "duplicate event id",
			files: map[string]string{
				"0001.json": env("1", "a", "DomainCreated"),
				"0002.json": env("2", "a", "NodeAdded"),
			},
			want: []string{"0002.json:1: event 2 (a): event_id: duplicate event id, first used by event 1 at 0001.json:1"},
		},
		{
			name: "duplicate sequence",
			files: map[string]string{
				"0001.json": env("1", "a", "DomainCreated"),
				"0002.json": env("1", "b", "NodeAdded"),
			},
			want: []string{"0002.json:1: event 1 (b): sequence: duplicate sequence 1, also used at 0001.json:1"},
		},
		{
			name: "gap",
			files: map[string]string{
				"0001.json": env("1", "a", "DomainCreated"),
				"0004.json": env("4", "d", "NodeAdded"),
			},
			want: []string{"event 4 (d): sequence: gap: sequences 2 to 3 are missing"},
		},
		{
			name:  "log not starting at 1",
			files: map[string]string{"0002.json": env("2", "b", "DomainCreated")},
			want:  []string{"gap: the log starts at 2, not 1"},
		},
		{
			name:  "disorder within an NDJSON file",
			files: map[string]string{"log.ndjson": env("2", "b", "NodeAdded") + "\n" + env("1", "a", "DomainCreated") + "\n"},
			want:  []string{"log.ndjson:2: event 1 (a): sequence: out of order: follows sequence 2 on line 1"},
		},
		{
			name:  "trailing content",
			files: map[string]string{"0001.json": env("1", "a", "DomainCreated") + " {}"},
			want:  []string{"0001.json:1:166: unexpected content after the JSON value"},
		},
		// Strictness beyond encoding/json (docs/events.md, Validation).
		{
			name:  "invalid UTF-8 names line, column and byte offset",
			files: map[string]string{"0001.json": "{\n  \"event_id\": \"a\xffb\"\n}"},
			want:  []string{"0001.json:2:17: invalid UTF-8: byte 0xff at byte offset 18"},
		},
		{
			name:  "invalid UTF-8 in NDJSON refuses the file",
			files: map[string]string{"log.ndjson": env("1", "a", "DomainCreated") + "\n" + strings.Replace(env("2", "b", "NodeAdded"), `"c"`, "\"\xc3\x28\"", 1) + "\n"},
			want:  []string{"log.ndjson:2:", "invalid UTF-8: byte 0xc3"},
		},
		{
			name:  "lone surrogate escape",
			files: map[string]string{"0001.json": strings.Replace(env("1", "a", "DomainCreated"), `"data":{}`, `"data":{"name":"\ud800"}`, 1)},
			want:  []string{"data.name: a \\u escape is a lone UTF-16 surrogate"},
		},
		{
			name:  "key in another case",
			files: map[string]string{"0001.json": strings.Replace(env("1", "a", "DomainCreated"), `"event_type"`, `"Event_Type"`, 1)},
			want:  []string{`0001.json:1:`, `Event_Type: unknown field "Event_Type" (keys are matched exactly: the field is "event_type")`},
		},
		{
			name:  "duplicate key",
			files: map[string]string{"0001.json": strings.Replace(env("1", "a", "DomainCreated"), `"sequence":1`, `"sequence":1,"sequence":2`, 1)},
			want:  []string{`sequence: duplicate key "sequence"`},
		},
		{
			name:  "duplicate key nested in data",
			files: map[string]string{"0001.json": strings.Replace(env("1", "a", "DomainCreated"), `"data":{}`, `"data":{"nodes":[{"name":"x"},{"proxmox":{"vmid":1,"vmid":2}}]}`, 1)},
			want:  []string{`data.nodes[1].proxmox.vmid: duplicate key "vmid"`},
		},
		{
			name:  "nesting too deep",
			files: map[string]string{"0001.json": strings.Replace(env("1", "a", "DomainCreated"), `"data":{}`, `"data":{"a":`+strings.Repeat("[", 100)+strings.Repeat("]", 100)+`}`, 1)},
			want:  []string{"nested more than 32 levels deep"},
		},
		{
			name:  "event id not an identifier",
			files: map[string]string{"0001.json": env("1", "a b", "DomainCreated")},
			want:  []string{`0001.json:1: event 1: event_id: "a b" is not an identifier`},
		},
		{
			name:  "aggregate id too long",
			files: map[string]string{"0001.json": strings.Replace(env("1", "a", "DomainCreated"), `"aggregate_id":"cim"`, `"aggregate_id":"`+strings.Repeat("c", 129)+`"`, 1)},
			want:  []string{`aggregate_id: "cccc`, `(129 bytes) is longer than 128 bytes`},
		},
		{
			name:  "timestamp not RFC 3339",
			files: map[string]string{"0001.json": strings.Replace(env("1", "a", "DomainCreated"), `"2025-11-20T10:00:00Z"`, `"yesterday"`, 1)},
			want:  []string{`timestamp: "yesterday" is not an RFC 3339 time`},
		},
		{
			name:  "no files",
			files: map[string]string{"notes.txt": "x"},
			want:  []string{"no event files"},
		},
		{
			name: "all problems in one run",
			files: map[string]string{
				"0001.json": env("1", "a", "Bogus"),
				"0002.json": "{",
				"0005.json": env("5", "e", "NodeAdded"),
			},
			want: []string{`unknown event type "Bogus"`, "0002.json:1:", "gap: sequences 2 to 4"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, problems := events.Load(t.Context(), tree(t, tt.files))
			if len(problems) == 0 {
				t.Fatalf("no problems, want %q", tt.want)
			}
			got := problems.Error()
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("problems do not mention %q:\n%s", w, got)
				}
			}
		})
	}
}

// TestGiantValuesStayShort: a value of hundreds of kilobytes appears in a problem as its start and its
// length, never whole.
func TestGiantValuesStayShort(t *testing.T) {
	t.Parallel()
	giant := strings.Repeat("a", 700<<10)
	for name, data := range map[string]string{
		"event id":      env("1", giant, "DomainCreated"),
		"event type":    env("1", "a", giant),
		"key":           strings.Replace(env("1", "a", "DomainCreated"), `"data"`, `"`+giant+`":1,"data"`, 1),
		"timestamp":     strings.Replace(env("1", "a", "DomainCreated"), `"2025-11-20T10:00:00Z"`, `"`+giant+`"`, 1),
		"number":        strings.Replace(env("1", "a", "DomainCreated"), `"sequence":1`, `"sequence":`+strings.Repeat("9", 700<<10), 1),
		"deep key path": strings.Replace(env("1", "a", "DomainCreated"), `"data":{}`, `"data":`+strings.Repeat(`{"`+strings.Repeat("k", 200)+`":`, 25)+`{"x":1,"x":1}`+strings.Repeat("}", 25), 1),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, problems := events.Parse("0001.json", []byte(data))
			if len(problems) == 0 {
				t.Fatal("no problem")
			}
			for _, p := range problems {
				if s := p.String(); len(s) > 1500 {
					t.Errorf("a problem of %d bytes: %.300s…", len(s), s)
				}
			}
		})
	}
	if got := events.Excerpt(giant); got != `"`+strings.Repeat("a", events.ExcerptMax)+`…" (716800 bytes)` {
		t.Errorf("Excerpt = %s", got)
	}
}
