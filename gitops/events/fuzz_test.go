package events_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// FuzzParse feeds arbitrary bytes through the parser, the order checks and the fold, as a .json and as
// an NDJSON file: nothing panics, and every problem stays short whatever the input holds.
//
//	go test ./gitops/events -run '^$' -fuzz FuzzParse
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("../../fixtures/events/*.json")
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	var log []string
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		log = append(log, strings.Join(strings.Fields(string(data)), " "))
	}
	f.Add([]byte(strings.Join(log, "\n")))
	for _, s := range []string{
		"", "{", "[]", "null", "\xff", `{"event_id":"\ud800"}`, `{"Event_ID":"a"}`, `{"a":1,"a":1}`,
		strings.Repeat("[", 200), `{"data":{"x":{"y":1,"y":2}}}`, env("1", strings.Repeat("a", 500), "NodeAdded"),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, name := range []string{"e.json", "e.ndjson"} {
			evs, problems := events.Parse(name, data)
			evs, more := events.Order(evs)
			_, fold := topology.Fold(evs)
			for _, p := range append(append(problems, more...), fold...) {
				// Field, message and the event id are bounded; the rest is the file name and numbers.
				if s := p.String(); len(s) > 2048 {
					t.Fatalf("a problem of %d bytes: %.300s…", len(s), s)
				}
			}
		}
	})
}
