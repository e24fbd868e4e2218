package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/queue"
)

// SubjectDeliveries is the prefix of the subjects on which serve announces the deliveries it queued:
// cimdeploy.deliveries.<event> (push, pull_request), one CIM-envelope event per delivery, type
// DeliveryQueued or DeliveryDuplicate, data the queued job. They are core NATS messages for live
// subscribers; the jobs themselves are kept in the stream CIMDEPLOY_JOBS until handled.
const SubjectDeliveries = "cimdeploy.deliveries"

// Event types of the deliveries.
const (
	DeliveryQueued    = "DeliveryQueued"
	DeliveryDuplicate = "DeliveryDuplicate"
)

// jobQueue is where deliveries go: the durable queue.
type jobQueue interface {
	Enqueue(ctx context.Context, j queue.Job) (duplicate bool, err error)
}

// deliveries queues the receiver's jobs and announces each on NATS. The announcement is best-effort:
// the job is already stored when it is sent.
type deliveries struct {
	q      jobQueue
	nc     *nats.Conn
	logger *slog.Logger
}

// Enqueue implements webhooks.Queue.
func (d deliveries) Enqueue(ctx context.Context, j queue.Job) (bool, error) {
	dup, err := d.q.Enqueue(ctx, j)
	if err != nil {
		return dup, err
	}
	typ := DeliveryQueued
	if dup {
		typ = DeliveryDuplicate
	}
	data, err := json.Marshal(j)
	if err != nil {
		return dup, nil
	}
	id := pipeline.NewEventID()
	ev := pipeline.Event{EventID: id, AggregateID: j.Delivery, Sequence: 1, Timestamp: time.Now().UTC(),
		CorrelationID: j.Delivery, CausationID: id, Type: typ, Data: data}
	raw, err := json.Marshal(ev)
	if err != nil {
		return dup, nil
	}
	if err := d.nc.Publish(SubjectDeliveries+"."+subjectToken(j.Event), raw); err != nil {
		d.logger.Warn("announce delivery", "delivery", j.Delivery, "err", err)
	}
	return dup, nil
}

// subjectToken keeps a subject token to the characters NATS allows in one ([A-Za-z0-9_-]).
func subjectToken(s string) string {
	out := []byte(s)
	for i, c := range out {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			out[i] = '_'
		}
	}
	if len(out) == 0 {
		return "_"
	}
	return string(out)
}
