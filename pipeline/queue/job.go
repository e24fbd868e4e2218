// Package queue keeps the work that webhook deliveries and commands ask for in NATS JetStream, so that
// nothing accepted is lost when cimdeploy stops, and hands it out: latest wins per branch, one deploy
// at a time per cluster, validations in parallel up to a bound.
package queue

import (
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// Job is one run asked for: by a GitHub delivery (push, pull_request) or by a command.
type Job struct {
	// Delivery is the X-GitHub-Delivery of the webhook delivery (a GUID); the same delivery twice is
	// one job. Commands set a fresh id.
	Delivery string `json:"delivery"`
	// Event is the X-GitHub-Event that asked for the job (push, pull_request) or "manual".
	Event string `json:"event"`
	// Kind is what the run may do: deploy, or validate only.
	Kind pipeline.Kind `json:"kind"`
	// Ref is the ref to check out: refs/heads/<branch> for a push, refs/pull/<n>/head for a pull request.
	Ref string `json:"ref"`
	// Commit is the commit to run, 40 hex digits (a push's after, a pull request's head sha).
	Commit string `json:"commit"`
	// Branch is the pushed branch without refs/heads/, empty for a pull request.
	Branch string `json:"branch,omitempty"`
	// PullRequest is the pull request's number, 0 for a push.
	PullRequest int `json:"pull_request,omitempty"`
	// Repository is the repository's full name, owner/name.
	Repository string `json:"repository"`
	// Fork is true for a pull request whose head lives in another repository: validated only.
	Fork bool `json:"fork,omitempty"`
	// Sender is the login of the user whose action caused the delivery.
	Sender string `json:"sender,omitempty"`
	// Received is when cimdeploy accepted the delivery.
	Received time.Time `json:"received"`
}
