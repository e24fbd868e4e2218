// Package webhookbench measures webhook receivers under load: Run sends signed deliveries from many
// concurrent senders over real HTTP and reports throughput and latency percentiles; Bare and
// Library are the two receivers cimdeploy's Receiver is compared with (BenchmarkReceivers, recorded
// in docs/benchmarks/webhooks.md).
package webhookbench
