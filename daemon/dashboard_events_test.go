package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// sseMsg is one server-sent event, or one comment line.
type sseMsg struct {
	ID, Event, Data string
	Comment         string
}

// sseClient is an open event stream; Msgs closes when the server ends it.
type sseClient struct {
	Msgs   chan sseMsg
	cancel context.CancelFunc
}

// openSSE opens path; a status other than 200 is returned with no client.
func openSSE(t *testing.T, url string, header http.Header) (*sseClient, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, resp
	}
	c := &sseClient{Msgs: make(chan sseMsg, 256), cancel: cancel}
	go func() {
		defer close(c.Msgs)
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		var m sseMsg
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if m != (sseMsg{}) {
					c.Msgs <- m
				}
				m = sseMsg{}
			case strings.HasPrefix(line, ":"):
				c.Msgs <- sseMsg{Comment: strings.TrimSpace(line[1:])}
			default:
				field, value, _ := strings.Cut(line, ":")
				value = strings.TrimPrefix(value, " ")
				switch field {
				case "id":
					m.ID = value
				case "event":
					m.Event = value
				case "data":
					m.Data = value
				}
			}
		}
	}()
	t.Cleanup(cancel)
	return c, resp
}

// next is the next message that is not a comment; ok is false when the stream ended.
func (c *sseClient) next(t *testing.T) (sseMsg, bool) {
	t.Helper()
	for {
		select {
		case m, ok := <-c.Msgs:
			if !ok || m.Comment == "" {
				return m, ok
			}
		case <-t.Context().Done():
			t.Fatal("event stream: test ended while waiting")
		}
	}
}

func (m sseMsg) event(t *testing.T) pipeline.Event {
	t.Helper()
	var ev pipeline.Event
	if err := json.Unmarshal([]byte(m.Data), &ev); err != nil {
		t.Fatalf("event %q: %v", m.Data, err)
	}
	return ev
}

// consumers is how many consumers the run stream has.
func consumers(t *testing.T, st *store.Store) int {
	t.Helper()
	s, err := st.JetStream().Stream(t.Context(), store.StreamRuns)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

func TestEventStream(t *testing.T) {
	st := openStore(t)
	mux := http.NewServeMux()
	reg := prometheus.NewPedanticRegistry()
	pages{runs: st, stream: st.JetStream(), logger: slog.New(slog.DiscardHandler), reg: reg,
		maxStreams: 1, heartbeat: 20 * time.Millisecond}.register(mux)
	metric := func(name string) float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == name {
				m := f.GetMetric()[0]
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		t.Fatalf("no metric %s", name)
		return 0
	}
	srv := httptest.NewUnstartedServer(mux)
	// serve's own server has a write timeout: a stream outlives it (each write has its own deadline).
	srv.Config.WriteTimeout = 100 * time.Millisecond
	srv.Start()
	defer srv.Close()

	for _, path := range []string{"/runs/a.b/events", "/runs/..%2f..%2fetc/events", "/runs/20260101T000000Z-00000000/events"} {
		if c, resp := openSSE(t, srv.URL+path, nil); c != nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %v, want 404", path, resp.Status)
		}
	}

	run := startGatedRun(t, st, nil)
	run.waitEvent(t, pipeline.StageStarted)
	events := srv.URL + "/runs/" + run.Run.ID + "/events"

	// A client that goes away mid-run leaves no consumer behind.
	c, resp := openSSE(t, events, nil)
	if c == nil {
		t.Fatalf("GET events: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	if first, _ := c.next(t); first.event(t).Sequence != 1 {
		t.Errorf("first event %s: sequence %d, want 1 (from the first event)", first.Data, first.event(t).Sequence)
	}
	if n := consumers(t, st); n != 1 {
		t.Errorf("%d consumers on the run stream while a client follows, want 1", n)
	}
	// One stream is the limit here: a second client is turned away.
	if c2, resp := openSSE(t, events, nil); c2 != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second client: %s, Retry-After %q; want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	if open, rejected := metric("cimdeploy_dashboard_streams"), metric("cimdeploy_dashboard_streams_rejected_total"); open != 1 || rejected != 1 {
		t.Errorf("metrics: %v streams open, %v rejected; want 1 and 1", open, rejected)
	}
	// The run waits at generate: the stream keeps beating, past the server's write timeout (30
	// heartbeats 20ms apart take longer than 100ms even when the ticker catches up on one).
	beats := 0
	for m := range c.Msgs {
		if m.Comment == "heartbeat" {
			if beats++; beats == 30 {
				break
			}
		}
	}
	if beats != 30 {
		t.Fatalf("the stream ended after %d heartbeats while the run was going on", beats)
	}
	c.cancel()
	for deadline := time.Now().Add(10 * time.Second); consumers(t, st) != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d consumers left on the run stream after the client went away", consumers(t, st))
		}
		time.Sleep(10 * time.Millisecond) // polling the server's consumer count
	}
	if open := metric("cimdeploy_dashboard_streams"); open != 0 {
		t.Errorf("%v streams open after the client went away, want 0", open)
	}

	// A client that follows the run sees every event in order, and the stream ends at RunFinished.
	c, resp = openSSE(t, events, nil)
	if c == nil {
		t.Fatalf("GET events after the first client left: %s", resp.Status)
	}
	run.Generate()
	run.Node1()
	run.Node2()
	var got []sseMsg
	for {
		m, ok := c.next(t)
		if !ok {
			break
		}
		got = append(got, m)
	}
	res := run.wait(t)
	if res.Status != pipeline.StatusFailed {
		t.Fatalf("run: %s, want failed", res.Status)
	}
	recorded, err := st.Events(t.Context(), run.Run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recorded) {
		t.Fatalf("streamed %d events, the store recorded %d", len(got), len(recorded))
	}
	for i, m := range got {
		ev := m.event(t)
		if ev.EventID != recorded[i].EventID || ev.Sequence != uint64(i+1) {
			t.Errorf("event %d: %s #%d, want %s #%d", i, ev.Type, ev.Sequence, recorded[i].Type, i+1)
		}
	}
	if last := got[len(got)-1].event(t); last.Type != pipeline.RunFinished {
		t.Errorf("last event %s, want RunFinished", last.Type)
	}

	// A browser that reconnects gets what came after the last id it saw, from the stream sequence.
	mid := got[len(got)-3]
	c, resp = openSSE(t, events, http.Header{"Last-Event-ID": {mid.ID}})
	if c == nil {
		t.Fatalf("GET events with Last-Event-ID: %s", resp.Status)
	}
	var after []string
	for m, ok := c.next(t); ok; m, ok = c.next(t) {
		after = append(after, m.ID)
	}
	if want := []string{got[len(got)-2].ID, got[len(got)-1].ID}; strings.Join(after, ",") != strings.Join(want, ",") {
		t.Errorf("after Last-Event-ID %s: ids %v, want %v", mid.ID, after, want)
	}
	if _, err := strconv.ParseUint(mid.ID, 10, 64); err != nil {
		t.Errorf("event id %q: not a stream sequence", mid.ID)
	}
}
