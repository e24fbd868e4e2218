package topology_test

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/events/eventstest"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// BenchmarkHistory folds and projects synthetic histories (eventstest.History: the cluster's events,
// then NodeUpdated and ServiceConfigured changes) read from NDJSON files of 1,000 events: the time per
// event should stay flat as the history grows (linear), and the memory should follow the nodes, not
// the events. Besides ns/op and B/op (allocated), it reports:
//   - ns/event;
//   - cpu-ms/op: the CPU time of the process (user and system, the garbage collector's included) per
//     fold: on a shared machine, a figure less bent by the others than the elapsed time;
//   - peak-heap-MB: the most heap (live objects and garbage not yet swept) seen during a fold, sampled
//     every millisecond;
//   - peak-live-MB: the most heap found live by a garbage collection during a fold: what the fold
//     keeps.
//
// path=stream is topology.Load (events.Stream, one file at a time), path=whole is events.Load then
// topology.Fold, the whole log in memory, for the ratio within one run.
//
//	go test ./gitops/topology -run '^$' -bench History -benchtime 5x
func BenchmarkHistory(b *testing.B) {
	type load func(b *testing.B, dir string) *topology.Topology
	stream := func(b *testing.B, dir string) *topology.Topology {
		top, problems := topology.Load(b.Context(), dir)
		if len(problems) > 0 {
			b.Fatal(problems)
		}
		return top
	}
	whole := func(b *testing.B, dir string) *topology.Topology {
		evs, problems := events.Load(b.Context(), dir)
		top, more := topology.Fold(evs)
		if problems = append(problems, more...); len(problems) > 0 {
			b.Fatal(problems)
		}
		return top
	}
	for _, c := range []struct {
		path string
		load load
		h    eventstest.History
	}{
		{"stream", stream, eventstest.History{Nodes: 100, Events: 1000}},
		{"stream", stream, eventstest.History{Nodes: 100, Events: 10000}},
		{"stream", stream, eventstest.History{Nodes: 100, Events: 100000}},
		{"stream", stream, eventstest.History{Nodes: 1000, Events: 10000}},
		{"stream", stream, eventstest.History{Nodes: 1000, Events: 100000}},
		{"whole", whole, eventstest.History{Nodes: 1000, Events: 10000}},
		{"whole", whole, eventstest.History{Nodes: 1000, Events: 100000}},
	} {
		b.Run(fmt.Sprintf("path=%s/events=%d/nodes=%d", c.path, c.h.Events, c.h.Nodes), func(b *testing.B) {
			dir := b.TempDir()
			size, err := c.h.Write(dir)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			b.ReportAllocs()
			var peak heapPeak
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				runtime.GC() // each fold starts from the same heap, the collection left out of the figures
				cpu0 := cpuTime(b)
				b.StartTimer()
				stop := peak.watch()
				files, err := projection.Render(c.load(b, dir), projection.Options{})
				stop()
				cpu += cpuTime(b) - cpu0
				if err != nil || len(files) == 0 {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(c.h.Events), "ns/event")
			b.ReportMetric(float64(cpu.Microseconds())/1e3/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(peak.heap)/1e6, "peak-heap-MB")
			b.ReportMetric(float64(peak.live)/1e6, "peak-live-MB")
		})
	}
}

// heapPeak is the most heap seen while watching.
type heapPeak struct {
	heap, live uint64
}

// watch samples the heap every millisecond until stop is called, and once more then.
func (p *heapPeak) watch() (stop func()) {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	read := func() {
		metrics.Read(samples)
		p.heap = max(p.heap, samples[0].Value.Uint64())
		p.live = max(p.live, samples[1].Value.Uint64())
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				read()
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		read()
	}
}

// cpuTime is the CPU time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
