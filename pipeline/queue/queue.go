package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// Queue is the durable job queue in JetStream. Several processes may open queues on one NATS: they
// share the jobs, the dedupe memory and the deploy lock. A Queue is safe for concurrent use.
//
// Layout (names in pipeline/store/names.go):
//   - stream CIMDEPLOY_JOBS, subjects cimdeploy.jobs.<kind>.<key>, one message per job. WorkQueue
//     retention: a job is removed from the stream once acked, so the stream holds exactly the jobs
//     not yet handled (Depth is its message count), the last message of a subject is the newest job
//     still waiting for that key (latest wins asks exactly that), and nothing needs pruning. Limits
//     retention would keep handled jobs around and need a separate record of what is done.
//   - two durable pull consumers, "deploy" (cimdeploy.jobs.deploy.>, at most one job out at a time)
//     and "validate" (cimdeploy.jobs.validate.>), shared by every process.
//   - KV cimdeploy_deliveries: the state of each delivery's job (pending, queued, done), kept for
//     DedupeWindow: Enqueue dedupes on it, Work skips a job already done.
//   - KV cimdeploy_job_keys: the stream sequence of the latest job started per kind and key, so that
//     an older job delivered late (after a crash) never runs after a newer one.
//   - KV cimdeploy_locks, key "deploy": the deploy lock, a lease of DeployLease.
type Queue struct {
	cfg    Config
	logger *slog.Logger
	js     jetstream.JetStream

	stream     jetstream.Stream
	deploys    jetstream.Consumer
	validates  jetstream.Consumer
	deliveries jetstream.KeyValue
	keys       jetstream.KeyValue
	locks      jetstream.KeyValue

	owner string // who holds the deploy lock, for people reading the bucket
	jobs  *prometheus.CounterVec
}

// Consumer names.
const (
	consumerDeploy   = "deploy"
	consumerValidate = "validate"
)

var workerSeq atomic.Uint64

// Open creates or updates the stream, consumers and buckets of the queue on js (idempotent: every
// process opening the queue does it, and it migrates their settings), and registers the metrics on
// reg (nil: none). Use store.(*Store).JetStream for js.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Queue, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("queue config: %w", err)
	}
	host, _ := os.Hostname()
	q := &Queue{
		cfg: cfg, logger: logger, js: js,
		owner: fmt.Sprintf("%s pid %d queue %d", host, os.Getpid(), workerSeq.Add(1)),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cimdeploy_queue_jobs_total",
			Help: "Jobs by kind and outcome: enqueued, duplicate, succeeded, failed, superseded, skipped (already done), interrupted (handed back).",
		}, []string{"kind", "outcome"}),
	}
	var err error
	q.stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        store.StreamJobs,
		Description: "cimdeploy jobs waiting to run, one subject per kind and key",
		Subjects:    []string{store.SubjectJobs + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		// Full: a new job is refused (Enqueue fails, the sender retries later); no queued job is
		// dropped for it.
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     int64(cfg.MaxJobs),
		Duplicates:  cfg.DedupeWindow,
		Replicas:    cfg.Replicas,
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("queue: stream %s: %w", store.StreamJobs, err)
	}
	consumers := []struct {
		c         *jetstream.Consumer
		name      string
		kind      pipeline.Kind
		ackPendng int
	}{
		// One deploy out at a time: a second process does not take the next deploy while the first
		// runs, so the newest job of a key is still queued when the first ends (latest wins).
		{&q.deploys, consumerDeploy, pipeline.KindDeploy, 1},
		{&q.validates, consumerValidate, pipeline.KindValidate, -1},
	}
	for _, c := range consumers {
		*c.c, err = q.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       c.name,
			Description:   "cimdeploy " + string(c.kind) + " jobs",
			FilterSubject: store.SubjectJobs + "." + string(c.kind) + ".>",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			MaxDeliver:    -1,
			MaxAckPending: c.ackPendng,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			Replicas:      cfg.Replicas,
		})
		if err != nil {
			return nil, fmt.Errorf("queue: consumer %s of stream %s: %w", c.name, store.StreamJobs, err)
		}
	}
	buckets := []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&q.deliveries, jetstream.KeyValueConfig{Bucket: store.BucketDeliveries, Description: "cimdeploy: state of each delivery's job",
			History: 1, TTL: cfg.DedupeWindow}},
		{&q.keys, jetstream.KeyValueConfig{Bucket: store.BucketJobKeys, Description: "cimdeploy: latest job started per queue key",
			History: 1, TTL: cfg.DedupeWindow}},
		{&q.locks, jetstream.KeyValueConfig{Bucket: store.BucketLocks, Description: "cimdeploy: the deploy lock, renewed by its holder",
			History: 1, TTL: cfg.DeployLease}},
	}
	for _, b := range buckets {
		b.cfg.Storage = jetstream.FileStorage
		b.cfg.Replicas = cfg.Replicas
		if *b.kv, err = js.CreateOrUpdateKeyValue(ctx, b.cfg); err != nil {
			return nil, fmt.Errorf("queue: bucket %s: %w", b.cfg.Bucket, err)
		}
	}
	if reg != nil {
		depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cimdeploy_queue_depth",
			Help: "Jobs queued and not yet handled (waiting, held or running).",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			n, err := q.Depth(ctx)
			if err != nil {
				q.logger.Warn("queue depth", "err", err)
				return math.NaN()
			}
			return float64(n)
		})
		for _, c := range []prometheus.Collector{depth, q.jobs} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("queue: register metrics: %w", err)
			}
		}
	}
	return q, nil
}

// errCodeStreamMaxMsgs is JetStream's error code for a message the stream did not store
// (nats-server's JSStreamStoreFailedF), which a full stream with DiscardNew answers with the
// description "maximum messages exceeded".
const errCodeStreamMaxMsgs jetstream.ErrorCode = 10077

// deliveryState is the value of a delivery in the deliveries bucket.
type deliveryState struct {
	State string `json:"state"` // pending, queued, done
	// Seq is the job's stream sequence once queued.
	Seq uint64 `json:"seq,omitempty"`
	// Outcome says how a done job ended: succeeded, failed, superseded.
	Outcome string `json:"outcome,omitempty"`
}

// Delivery states.
const (
	statePending = "pending" // being enqueued: its publish may or may not have been stored
	stateQueued  = "queued"
	stateDone    = "done"
)

// Enqueue stores j durably: it returns once JetStream acknowledged the job (written to the stream's
// storage), or with an error, in which case the caller should answer so that the job is asked again
// (GitHub: a 5xx, then a redelivery). The same delivery id again within DedupeWindow is stored once:
// the later calls return duplicate true. Enqueue is safe to call concurrently and to retry.
func (q *Queue) Enqueue(ctx context.Context, j Job) (duplicate bool, err error) {
	if err := j.Validate(); err != nil {
		return false, fmt.Errorf("enqueue: %w", err)
	}
	if j.Received.IsZero() {
		j.Received = time.Now().UTC()
	}
	data, err := json.Marshal(j)
	if err != nil {
		return false, fmt.Errorf("enqueue %s: %w", j, err)
	}
	// First claim the delivery id. A claim left pending (an earlier attempt that died or failed
	// between claim and ack) is taken over: the publish below is deduplicated by the stream on the
	// same Nats-Msg-Id, so taking it over never stores the job twice.
	pending, _ := json.Marshal(deliveryState{State: statePending})
	rev, err := q.deliveries.Create(ctx, j.Delivery, pending)
	if errors.Is(err, jetstream.ErrKeyExists) {
		entry, gerr := q.deliveries.Get(ctx, j.Delivery)
		if gerr != nil {
			return false, fmt.Errorf("enqueue %s: delivery %s: bucket %s: %w", j, j.Delivery, store.BucketDeliveries, gerr)
		}
		var st deliveryState
		if err := json.Unmarshal(entry.Value(), &st); err != nil {
			return false, fmt.Errorf("enqueue %s: delivery %s: decode: %w", j, j.Delivery, err)
		}
		if st.State != statePending {
			q.jobs.WithLabelValues(string(j.Kind), "duplicate").Inc()
			return true, nil
		}
		rev, err = entry.Revision(), nil
	}
	if err != nil {
		return false, fmt.Errorf("enqueue %s: delivery %s: bucket %s: %w", j, j.Delivery, store.BucketDeliveries, err)
	}
	ack, err := q.js.Publish(ctx, j.Subject(), data, jetstream.WithMsgID(j.Delivery), jetstream.WithExpectStream(store.StreamJobs))
	if err != nil {
		var api *jetstream.APIError
		if errors.As(err, &api) && api.ErrorCode == errCodeStreamMaxMsgs {
			return false, fmt.Errorf("enqueue %s: stream %s refused it (full at CIMDEPLOY_QUEUE_MAX_JOBS=%d, or its storage failed): %w",
				j, store.StreamJobs, q.cfg.MaxJobs, err)
		}
		return false, fmt.Errorf("enqueue %s: publish to %s: %w", j, j.Subject(), err)
	}
	if ack.Duplicate {
		q.jobs.WithLabelValues(string(j.Kind), "duplicate").Inc()
		return true, nil
	}
	queued, _ := json.Marshal(deliveryState{State: stateQueued, Seq: ack.Sequence})
	// Compare-and-set: a job run so fast that it is already done keeps its done state.
	if _, err := q.deliveries.Update(ctx, j.Delivery, queued, rev); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		q.logger.Warn("record queued delivery", "delivery", j.Delivery, "err", err)
	}
	q.jobs.WithLabelValues(string(j.Kind), "enqueued").Inc()
	q.logger.Info("job queued", "delivery", j.Delivery, "kind", j.Kind, "key", j.Key(), "commit", j.Commit, "seq", ack.Sequence)
	return false, nil
}

// Depth is the number of jobs stored and not yet handled: waiting, held (paused, or behind the
// deploy lock) or running.
func (q *Queue) Depth(ctx context.Context) (int, error) {
	info, err := q.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("queue depth: stream %s: %w", store.StreamJobs, err)
	}
	return int(info.State.Msgs), nil
}
