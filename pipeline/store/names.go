package store

import (
	"fmt"
	"regexp"
)

// Names of everything cimdeploy keeps in JetStream, in one place. They are part of the on-disk and
// on-cluster format: renaming one orphans the data already stored under the old name.
//
//	stream CIMDEPLOY_RUNS      subjects cimdeploy.runs.<run-id>.<event_type>   the run history (events)
//	KV     cimdeploy_runs      key <run-id>                                    latest RunSummary per run
//	KV     cimdeploy_nodes     key <node>  (RFC 1123 label)                    NodeState per node
//	KV     cimdeploy_checks    key <hex>   (opaque, from the caller)           flake check verdicts
//	KV     cimdeploy_leases    key <run-id>                                    runs in progress (TTL lease)
//	stream CIMDEPLOY_JOBS      subjects cimdeploy.jobs.<kind>.<key>            queued jobs (WorkQueue, see pipeline/queue)
//	KV     cimdeploy_deliveries key <delivery-id>                              state of a delivery's job (TTL dedupe window)
//	KV     cimdeploy_job_keys   key <kind>.<key>                               latest job started per key (latest wins)
//	KV     cimdeploy_locks      key deploy                                     the deploy lock (TTL lease)
//	KV     cimdeploy_control    key pause, decision.<run-id>                   pause state and approval decisions
//
// Every subject cimdeploy publishes starts with "cimdeploy."; the second token names the stream
// ("runs", "jobs"), so streams never overlap. KV buckets live under $KV.<bucket>.> as NATS
// defines them.
const (
	// StreamRuns is the stream of run events: the run history, kept MaxAge (file storage, limits
	// retention, deduplicated on Nats-Msg-Id = event_id).
	StreamRuns = "CIMDEPLOY_RUNS"
	// SubjectRuns is the prefix of the run event subjects: cimdeploy.runs.<run-id>.<event_type>.
	SubjectRuns = "cimdeploy.runs"
	// StreamJobs is the stream of queued jobs: WorkQueue retention, a job is removed once handled.
	StreamJobs = "CIMDEPLOY_JOBS"
	// SubjectJobs is the prefix of the job subjects: cimdeploy.jobs.<kind>.<key>.
	SubjectJobs = "cimdeploy.jobs"

	// BucketRuns holds the latest RunSummary per run id, for fast listing.
	BucketRuns = "cimdeploy_runs"
	// BucketNodes holds the deployed NodeState per node name.
	BucketNodes = "cimdeploy_nodes"
	// BucketChecks holds flake check verdicts keyed by an opaque hex key.
	BucketChecks = "cimdeploy_checks"
	// BucketLeases holds a lease per run in progress, renewed by the process running it; the bucket's
	// TTL drops the lease of a process that is gone (see MarkInterrupted).
	BucketLeases = "cimdeploy_leases"
	// BucketDeliveries remembers each delivery id of a queued job and its state (queued, done) for
	// the queue's dedupe window.
	BucketDeliveries = "cimdeploy_deliveries"
	// BucketJobKeys holds the latest job started per queue key, so an older job is never run after
	// a newer one of the same key.
	BucketJobKeys = "cimdeploy_job_keys"
	// BucketLocks holds the deploy lock; the bucket's TTL drops the lock of a process that is gone.
	BucketLocks = "cimdeploy_locks"
	// BucketControl holds the pause state and the approval decisions of runs.
	BucketControl = "cimdeploy_control"
)

var (
	// token is what a run id or an event type may be: one subject token and one KV key.
	token = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
	// label is an RFC 1123 DNS label, lower case so that a node has one key only.
	label = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// hexKey is a check cache key.
	hexKey = regexp.MustCompile(`^[0-9a-fA-F]{1,256}$`)
)

// RunSubject is the subject of one event of a run: cimdeploy.runs.<run-id>.<event_type>.
func RunSubject(runID, eventType string) (string, error) {
	if !token.MatchString(runID) {
		return "", fmt.Errorf("run id %q: want 1-128 characters of [A-Za-z0-9_-]", runID)
	}
	if !token.MatchString(eventType) {
		return "", fmt.Errorf("event type %q: want 1-128 characters of [A-Za-z0-9_-]", eventType)
	}
	return SubjectRuns + "." + runID + "." + eventType, nil
}

// runFilter is the subject filter of every event of a run.
func runFilter(runID string) (string, error) {
	if !token.MatchString(runID) {
		return "", fmt.Errorf("run id %q: want 1-128 characters of [A-Za-z0-9_-]", runID)
	}
	return SubjectRuns + "." + runID + ".>", nil
}

func checkNodeName(name string) error {
	if !label.MatchString(name) {
		return fmt.Errorf("node name %q: want an RFC 1123 label (a-z, 0-9, '-', at most 63, no '-' at either end)", name)
	}
	return nil
}

func checkCacheKey(key string) error {
	if !hexKey.MatchString(key) {
		return fmt.Errorf("check cache key %q: want 1-256 hex digits", key)
	}
	return nil
}
