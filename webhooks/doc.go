// Package webhooks receives GitHub deliveries (push, pull_request, ping), verifies them and enqueues runs.
package webhooks
