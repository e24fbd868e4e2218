// Package forge reports runs to GitHub: commit statuses (cimdeploy/validate for every run,
// cimdeploy/deploy for deploy runs), a deployment with its statuses for deploy runs and, when
// authenticated as a GitHub App, a check run with one annotation per located problem of the events.
// Reporting is best-effort and never blocks a run: calls are queued per commit and sent in order by the
// Reporter's goroutines, retried within bounds and paced by GitHub's rate limits.
//
// The forgetest package stands in for the GitHub REST API in tests.
package forge
