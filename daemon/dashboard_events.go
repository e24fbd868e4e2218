package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// eventStream opens and removes the consumers of the live event stream: the store's JetStream.
type eventStream interface {
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
	DeleteConsumer(ctx context.Context, stream, consumer string) error
}

// consumerIdle is how long the server keeps a live stream's consumer that nobody reads, should the
// daemon go away without removing it.
const consumerIdle = 30 * time.Second

// events answers GET /runs/{id}/events with server-sent events (text/event-stream): every event of
// the run, in the order the store recorded them, from the first one (or from after the stream
// sequence in Last-Event-ID when the browser reconnects), read by a JetStream ordered consumer on
// cimdeploy.runs.<id>.>.
//
// Each run event is one message: "id:" the stream sequence, "data:" the pipeline.Event as JSON. A
// comment line (": heartbeat") goes out every heartbeat, so proxies keep the connection and a dead
// client is found. The stream ends after RunFinished, or with an "end" event when the run's summary
// is final and no RunFinished came within a heartbeat (it aged out of the stream). Closing the
// connection stops and removes the consumer. At most maxStreams are open at once; one more is
// answered 503 with Retry-After. An id that is no run id, or names no run, is answered 404.
func (p pages) events(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !runID.MatchString(id) {
		http.Error(w, "no such run", http.StatusNotFound)
		return
	}
	if p.stream == nil {
		http.Error(w, "live updates are not served", http.StatusServiceUnavailable)
		return
	}
	select {
	case p.streams <- struct{}{}:
	default:
		p.streamsRejected.Inc()
		w.Header().Set("Retry-After", "10")
		http.Error(w, "too many live views open: try again later", http.StatusServiceUnavailable)
		return
	}
	p.streamsOpen.Inc()
	release := sync.OnceFunc(func() { p.streamsOpen.Dec(); <-p.streams })
	defer release()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	read, cancelRead := context.WithTimeout(ctx, pageTimeout)
	_, ok, err := p.runs.Run(read, id)
	cancelRead()
	if err != nil {
		p.fail(w, "read run", err)
		return
	}
	if !ok {
		http.Error(w, "no such run", http.StatusNotFound)
		return
	}

	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{store.SubjectRuns + "." + id + ".>"},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: consumerIdle,
	}
	if last, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil && last > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last+1
	}
	cons, err := p.stream.OrderedConsumer(ctx, store.StreamRuns, cfg)
	if err != nil {
		p.fail(w, "follow run", err)
		return
	}
	msgs, err := cons.Messages()
	if err != nil {
		p.fail(w, "follow run", err)
		return
	}
	feed := make(chan jetstream.Msg)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		defer close(feed)
		for {
			msg, err := msgs.Next()
			if err != nil {
				return // stopped, or the connection to the store is gone
			}
			select {
			case feed <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		cancel()
		msgs.Stop()
		<-fed
		release()
		p.removeConsumer(context.WithoutCancel(r.Context()), cons)
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
	h.Set("X-Content-Type-Options", "nosniff")
	sse := &sseWriter{w: w, rc: http.NewResponseController(w), deadline: 2*p.heartbeat + 10*time.Second}
	if err := sse.send("retry: 3000\n\n"); err != nil {
		return
	}
	tick := time.NewTicker(p.heartbeat)
	defer tick.Stop()
	finalSeen := false
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-feed:
			if !ok {
				return
			}
			done, err := p.forward(sse, msg)
			if err != nil || done {
				return
			}
		case <-tick.C:
			if err := sse.send(": heartbeat\n\n"); err != nil {
				return
			}
			// A run whose RunFinished is not in the stream (aged out) would keep the page open forever.
			read, cancelRead := context.WithTimeout(ctx, pageTimeout)
			sum, ok, err := p.runs.Run(read, id)
			cancelRead()
			if err != nil || !ok || !sum.Status.Final() {
				continue
			}
			if finalSeen {
				_ = sse.send("event: end\ndata: " + string(sum.Status) + "\n\n")
				return
			}
			finalSeen = true
		}
	}
}

// forward sends one recorded event; done is true when it was the run's RunFinished.
func (p pages) forward(sse *sseWriter, msg jetstream.Msg) (done bool, err error) {
	var ev pipeline.Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		p.logger.Warn("live view: undecodable event", "subject", msg.Subject(), "err", err)
		return false, nil
	}
	data, err := json.Marshal(ev) // one line: JSON escapes every line break inside strings
	if err != nil {
		return false, fmt.Errorf("encode %s: %w", ev.Type, err)
	}
	var seq uint64
	if meta, err := msg.Metadata(); err == nil {
		seq = meta.Sequence.Stream
	}
	if err := sse.send(fmt.Sprintf("id: %d\ndata: %s\n\n", seq, data)); err != nil {
		return false, err
	}
	return ev.Type == pipeline.RunFinished, nil
}

// removeConsumer deletes a live stream's consumer (the server would drop it after consumerIdle).
func (p pages) removeConsumer(ctx context.Context, cons jetstream.Consumer) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	if err := p.stream.DeleteConsumer(ctx, store.StreamRuns, info.Name); err != nil {
		p.logger.Debug("live view: remove consumer", "consumer", info.Name, "err", err)
	}
}

// sseWriter writes server-sent events, each flushed at once, each with a fresh write deadline (the
// server's WriteTimeout would otherwise cut a stream that outlives it).
type sseWriter struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	deadline time.Duration
}

func (s *sseWriter) send(text string) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.deadline)) // not every ResponseWriter has deadlines
	if _, err := fmt.Fprint(s.w, text); err != nil {
		return err
	}
	return s.rc.Flush()
}
