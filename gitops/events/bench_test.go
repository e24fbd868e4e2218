package events_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// BenchmarkLoadAtTheLimits reads an events directory as large as the limits allow: 64 NDJSON files of
// just under 1 MiB each (64 MiB in all). Reported: MB/s and bytes allocated per byte read.
//
//	go test ./gitops/events -run '^$' -bench LoadAtTheLimits -benchtime 3x
const benchFiles = events.MaxTotalSize / events.MaxFileSize

func BenchmarkLoadAtTheLimits(b *testing.B) {
	dir := b.TempDir()
	seq := 0
	var total int64
	for f := range benchFiles {
		var sb strings.Builder
		for {
			seq++
			line := fmt.Sprintf(`{"event_id":"ev-%d","aggregate_id":"nats","sequence":%d,"timestamp":"2025-11-20T10:00:00Z","correlation_id":"c","causation_id":"c","event_type":"ServiceConfigured","data":{"kind":"nats","settings":{"jetstream":{"max_memory_store":%d}}}}`+"\n", seq, seq, seq)
			if sb.Len()+len(line) > events.MaxFileSize {
				seq--
				break
			}
			sb.WriteString(line)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%04d.ndjson", f)), []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(sb.Len())
	}
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		evs, problems := events.Load(b.Context(), dir)
		if len(problems) > 0 || len(evs) != seq {
			b.Fatalf("%d events of %d, %.500v", len(evs), seq, problems)
		}
	}
}
