package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

func TestFit(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("n", 700<<10)
	tests := []struct {
		name  string
		value any
		limit int
	}{
		{name: "one giant string", value: pipeline.Result{Error: huge + " and again " + huge, Status: pipeline.StatusFailed}, limit: 64 << 10},
		{name: "many long strings", value: func() pipeline.Result {
			var res pipeline.Result
			for i := range 200 {
				res.Stages = append(res.Stages, pipeline.StageResult{Name: fmt.Sprint("s", i), Error: strings.Repeat("e", 4000+i)})
			}
			return res
		}(), limit: 100 << 10},
		{name: "many short elements", value: func() pipeline.Result {
			var res pipeline.Result
			for i := range 5000 {
				res.Stages = append(res.Stages, pipeline.StageResult{Name: fmt.Sprint("s", i), Status: pipeline.StatusSkipped})
			}
			return res
		}(), limit: 16 << 10},
		{name: "fits already", value: pipeline.Result{Error: "short"}, limit: 1 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data, err := json.Marshal(tt.value)
			if err != nil {
				t.Fatal(err)
			}
			out, cut, err := fit(data, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) > tt.limit {
				t.Errorf("%d bytes, limit %d", len(out), tt.limit)
			}
			if (len(data) > tt.limit) != (len(cut) > 0) {
				t.Errorf("cut %v of %d bytes", firstN(cut, 3), len(data))
			}
			var back pipeline.Result
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatalf("shortened JSON does not decode: %v", err)
			}
			if len(data) > tt.limit && len(tt.value.(pipeline.Result).Error) > 1000 {
				if !strings.HasPrefix(back.Error, "nnnn") || !strings.Contains(back.Error, fmt.Sprintf(" of %d bytes cut]", 2*(700<<10)+11)) {
					t.Errorf("error %q does not keep its start and say its length", pipeline.Truncate(back.Error, 200))
				}
			}
		})
	}
}

// TestReportShortensWhatDoesNotFit: an event bigger than the server's max_payload is recorded
// shortened, never dropped, and its run ends.
func TestReportShortensWhatDoesNotFit(t *testing.T) {
	t.Parallel()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true, MaxPayload: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	s := open(t, Config{URL: srv.ClientURL()})
	if got := s.payloadLimit(); got != 256<<10-payloadHeadroom {
		t.Fatalf("payload limit %d, want the server's max_payload less headroom", got)
	}

	name := strings.Repeat("x", 700<<10) // a 700 KB node name, echoed twice into the error
	r := newRun("20250601T120000Z-b10a7ed1", t0)
	events := r.history(t, pipeline.StatusFailed)
	last := &events[len(events)-1]
	var res pipeline.Result
	if err := json.Unmarshal(last.Data, &res); err != nil {
		t.Fatal(err)
	}
	res.Error = fmt.Sprintf("node %q: unknown node %q", name, name)
	res.Stages[1].Steps = []pipeline.StepResult{{Node: "nats-1", Status: pipeline.StatusFailed, Error: res.Error, LastLines: []string{name}}}
	last.Data, _ = json.Marshal(res)
	report(t, s, events)

	sum, ok, err := s.Run(t.Context(), r.id)
	if err != nil || !ok {
		t.Fatalf("Run = %v, %v", ok, err)
	}
	if sum.Status != pipeline.StatusFailed || !strings.HasPrefix(sum.Error, `node "xxx`) || !strings.Contains(sum.Error, "bytes cut]") ||
		len(sum.Error) > pipeline.MaxErrorBytes {
		t.Errorf("summary %s %q", sum.Status, pipeline.Truncate(sum.Error, 300))
	}
	evs, err := s.Events(t.Context(), r.id)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != len(events) || evs[len(evs)-1].Type != pipeline.RunFinished {
		t.Fatalf("%d events recorded, want %d ending with RunFinished", len(evs), len(events))
	}
	var back pipeline.Result
	if err := json.Unmarshal(evs[len(evs)-1].Data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Status != pipeline.StatusFailed || len(back.Stages) != 2 || len(back.Stages[1].Steps) != 1 ||
		!strings.Contains(back.Stages[1].Steps[0].LastLines[0], "[truncated: ") {
		t.Errorf("recorded result %+v", pipeline.Truncate(string(evs[len(evs)-1].Data), 2000))
	}
}

// BenchmarkFit shortens a 2.8 MB result (a 700 KB value echoed into four fields) to 1 MiB.
func BenchmarkFit(b *testing.B) {
	name := strings.Repeat("x", 700<<10)
	res := pipeline.Result{Error: name + name, Stages: []pipeline.StageResult{{Name: "generate", Error: name, Steps: []pipeline.StepResult{{Error: name}}}}}
	data, err := json.Marshal(res)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := fit(data, 1<<20-payloadHeadroom); err != nil {
			b.Fatal(err)
		}
	}
}
