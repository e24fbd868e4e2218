// Package daemon is `cimdeploy serve`: the webhook receiver in front, the durable queue behind it, a
// worker that runs each job through the pipeline, and the reports of every run to GitHub and NATS.
// It also serves the run pages that statuses link to, health and readiness, and Prometheus metrics.
package daemon
