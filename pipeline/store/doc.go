// Package store keeps cimdeploy's state in NATS JetStream: the run history (every pipeline.Event,
// in the stream CIMDEPLOY_RUNS), a summary per run for fast listing, the deployed state per node
// and the flake check cache (KV buckets). names.go lists every stream, subject and bucket.
//
// By default Open starts an in-process nats-server with its JetStream files under the data directory
// (.cimdeploy/nats), locked against a second cimdeploy, handling no signals and opening no TCP port
// unless asked. With CIMDEPLOY_NATS_URL it uses an external cluster instead; the API is the same.
//
// The CLI and the server share a Store: the pipeline reports to it (Store implements
// pipeline.Reporter), `cimdeploy runs` lists Runs, and a restart reads the previous runs back.
package store
