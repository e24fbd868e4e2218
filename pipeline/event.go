package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Event types: every state change of a run is one.
const (
	RunQueued     = "RunQueued"
	RunStarted    = "RunStarted"
	StageStarted  = "StageStarted"
	StageFinished = "StageFinished"
	StepStarted   = "StepStarted"
	StepFinished  = "StepFinished"
	StepProgress  = "StepProgress"
	NodeBuilt     = "NodeBuilt"
	RunFinished   = "RunFinished"
)

// Event is a state change in the CIM envelope: correlation_id is the run id, causation_id the event
// that led to this one, aggregate_id the run.
type Event struct {
	EventID       string          `json:"event_id"`
	AggregateID   string          `json:"aggregate_id"`
	Sequence      uint64          `json:"sequence"`
	Timestamp     time.Time       `json:"timestamp"`
	CorrelationID string          `json:"correlation_id"`
	CausationID   string          `json:"causation_id"`
	Type          string          `json:"event_type"`
	Data          json.RawMessage `json:"data"`
}

// Payloads of the events.
type (
	// RunData is the payload of RunQueued and RunStarted.
	RunData struct {
		Run Run `json:"run"`
	}
	// StageData is the payload of StageStarted.
	StageData struct {
		Stage string `json:"stage"`
	}
	// StepData is the payload of StepStarted, StepFinished and NodeBuilt.
	StepData struct {
		Stage    string     `json:"stage"`
		Step     StepResult `json:"step"`
		Artifact *Artifact  `json:"artifact,omitempty"`
	}
	// ProgressData is the payload of StepProgress.
	ProgressData struct {
		Stage    string `json:"stage"`
		Node     string `json:"node,omitempty"`
		Done     int    `json:"done"`
		Expected int    `json:"expected"`
		Activity string `json:"activity,omitempty"`
	}
)

// Reporter receives the events of runs. Reporters are best-effort: an error is logged and never
// fails a run. Report may be called from several goroutines, but events of one run arrive in order.
type Reporter interface {
	Report(ctx context.Context, ev Event) error
}

// ReporterFunc adapts a function to Reporter.
type ReporterFunc func(ctx context.Context, ev Event) error

// Report calls f.
func (f ReporterFunc) Report(ctx context.Context, ev Event) error { return f(ctx, ev) }

// emitter stamps events of one run with the envelope and fans them out to the reporters, in order.
type emitter struct {
	mu        sync.Mutex
	runID     string
	seq       uint64
	last      string
	reporters []Reporter
	logger    *slog.Logger
	now       func() time.Time
}

func (e *emitter) emit(ctx context.Context, typ string, data any) {
	raw, err := json.Marshal(data)
	if err != nil {
		e.logger.Error("encode event", "type", typ, "err", err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	ev := Event{
		EventID:       newEventID(),
		AggregateID:   e.runID,
		Sequence:      e.seq,
		Timestamp:     e.now().UTC(),
		CorrelationID: e.runID,
		CausationID:   e.last,
		Type:          typ,
		Data:          raw,
	}
	if ev.CausationID == "" {
		ev.CausationID = ev.EventID
	}
	e.last = ev.EventID
	for _, r := range e.reporters {
		if err := r.Report(ctx, ev); err != nil {
			e.logger.Warn("reporter failed", "event", typ, "err", err)
		}
	}
}

// NewEventID returns a new event id, a random UUID (version 4), for events published outside a run.
func NewEventID() string { return newEventID() }

func newEventID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40 // UUID version 4
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
