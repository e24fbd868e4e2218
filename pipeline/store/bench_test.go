package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// BenchmarkReport measures Report on the embedded server, one event after another as the pipeline's
// emitter sends them: progress events (stream only) and stage events (stream and run summary).
func BenchmarkReport(b *testing.B) {
	for _, bm := range []struct {
		name string
		typ  string
		data any
	}{
		{name: "progress", typ: pipeline.StepProgress, data: pipeline.ProgressData{Stage: "build", Node: "nats-1", Done: 1, Expected: 9}},
		{name: "stage", typ: pipeline.StageStarted, data: pipeline.StageData{Stage: "build"}},
	} {
		b.Run(bm.name, func(b *testing.B) {
			s, err := Open(b.Context(), Config{DataDir: b.TempDir()}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			r := newRun("bench", t0)
			events := make([]pipeline.Event, b.N)
			for i := range events {
				events[i] = r.event(b, bm.typ, bm.data)
			}
			b.ResetTimer()
			for i := range b.N {
				if err := s.Report(b.Context(), events[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkOpen measures Open and Close of an embedded store that already holds 100 runs.
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(b.Context(), Config{DataDir: dir}, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 100 {
		r := newRun(fmt.Sprintf("run-%03d", i), t0.Add(time.Duration(i)*time.Minute))
		for _, ev := range r.history(b, pipeline.StatusSuccess) {
			if err := s.Report(b.Context(), ev); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	var open, closing time.Duration
	for b.Loop() {
		start := time.Now()
		s, err := Open(b.Context(), Config{DataDir: dir}, nil)
		if err != nil {
			b.Fatal(err)
		}
		open += time.Since(start)
		if runs, err := s.Runs(b.Context(), 20); err != nil || len(runs) != 20 {
			b.Fatal(runs, err)
		}
		start = time.Now()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		closing += time.Since(start)
	}
	b.ReportMetric(float64(open)/float64(time.Millisecond)/float64(b.N), "open-ms/op")
	b.ReportMetric(float64(closing)/float64(time.Millisecond)/float64(b.N), "close-ms/op")
}
