// Package store keeps cimdeploy's state in NATS JetStream: the run history (every pipeline.Event,
// in the stream CIMDEPLOY_RUNS), a summary per run for fast listing, the deployed state per node
// and the flake check cache (KV buckets). names.go lists every stream, subject and bucket.
//
// By default Open starts an in-process nats-server with its JetStream files under the data directory
// (.cimdeploy/nats), locked against a second cimdeploy, handling no signals and opening no TCP port
// unless asked. With CIMDEPLOY_NATS_URL it uses an external cluster instead; the API is the same.
//
// What a run records is bounded: the pipeline bounds errors and last lines (pipeline.Truncate), and
// Report shortens an event or a summary that would still exceed the connection's max payload (the
// longest strings first, each keeping its start and saying how long it was), never drops it. A run
// is never left running by a process that died: its reporter holds a lease on it (cimdeploy_leases),
// and Open marks failed the runs whose owner is gone (MarkInterrupted).
//
// The CLI and the server share a Store: the pipeline reports to it (Store implements
// pipeline.Reporter), `cimdeploy runs` lists Runs, and a restart reads the previous runs back.
package store
