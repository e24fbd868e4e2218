package projection_test

import (
	"fmt"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/events/eventstest"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

func BenchmarkHistoryOld(b *testing.B) {
	for _, h := range []eventstest.History{{Nodes: 1000, Events: 10000}, {Nodes: 1000, Events: 100000}} {
		b.Run(fmt.Sprintf("events=%d/nodes=%d", h.Events, h.Nodes), func(b *testing.B) {
			dir := b.TempDir()
			if _, err := h.Write(dir); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				evs, problems := events.Load(b.Context(), dir)
				top, more := topology.Fold(evs)
				if problems = append(problems, more...); len(problems) > 0 {
					b.Fatal(problems)
				}
				if _, err := projection.Render(top, projection.Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
