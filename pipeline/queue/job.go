// Package queue keeps the work that webhook deliveries and commands ask for in NATS JetStream, so that
// nothing accepted is lost when cimdeploy stops, and hands it out: latest wins per branch, one deploy
// at a time per cluster, validations in parallel up to a bound.
package queue

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
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

var (
	commitHex = regexp.MustCompile(`^[0-9a-f]{40}$`)
	// deliveryID is what a delivery id may be: one KV key and one Nats-Msg-Id (GitHub sends a GUID).
	deliveryID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
)

// maxRefBytes bounds refs and branch names (git itself refuses none, GitHub caps at 255 bytes).
const maxRefBytes = 255

// Validate reports every problem of j at once, each naming the delivery.
func (j Job) Validate() error {
	var errs []error
	if !deliveryID.MatchString(j.Delivery) {
		errs = append(errs, fmt.Errorf("delivery %q: want 1-128 characters of [A-Za-z0-9_-]", j.Delivery))
	}
	if j.Kind != pipeline.KindDeploy && j.Kind != pipeline.KindValidate {
		errs = append(errs, fmt.Errorf("kind %q: want %s or %s", j.Kind, pipeline.KindDeploy, pipeline.KindValidate))
	}
	if !commitHex.MatchString(j.Commit) {
		errs = append(errs, fmt.Errorf("commit %q: want 40 lower-case hex digits", j.Commit))
	}
	if strings.TrimSpace(j.Ref) == "" {
		errs = append(errs, errors.New("ref: empty"))
	} else if len(j.Ref) > maxRefBytes {
		errs = append(errs, fmt.Errorf("ref: %d bytes, want at most %d", len(j.Ref), maxRefBytes))
	}
	if len(j.Branch) > maxRefBytes {
		errs = append(errs, fmt.Errorf("branch: %d bytes, want at most %d", len(j.Branch), maxRefBytes))
	}
	switch {
	case j.PullRequest < 0:
		errs = append(errs, fmt.Errorf("pull request %d: want a positive number", j.PullRequest))
	case j.Kind == pipeline.KindDeploy && j.PullRequest != 0:
		errs = append(errs, fmt.Errorf("pull request #%d: a pull request is validated, never deployed", j.PullRequest))
	case j.Kind == pipeline.KindDeploy && j.Fork:
		errs = append(errs, errors.New("fork: a fork's commit is validated, never deployed"))
	case j.Kind == pipeline.KindDeploy && j.Branch == "":
		errs = append(errs, errors.New("branch: empty, a deploy names the branch it deploys"))
	case j.PullRequest == 0 && j.Branch == "":
		errs = append(errs, errors.New("branch and pull request: both empty, want one"))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("job for delivery %q: %w", j.Delivery, errors.Join(errs...))
}

// Key is what the queue keeps the latest job of: "pr-<n>" for a pull request, else the branch as
// one subject token (letters, digits and '-' kept, every other byte as _XX in hex, so two
// branches never share a key). Jobs of one kind and key replace each other: latest wins.
func (j Job) Key() string {
	if j.PullRequest > 0 {
		return "pr-" + strconv.Itoa(j.PullRequest)
	}
	var b strings.Builder
	for i := 0; i < len(j.Branch); i++ {
		c := j.Branch[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02X", c)
		}
	}
	return b.String()
}

// Subject is the job's subject in the stream: cimdeploy.jobs.<kind>.<key>.
func (j Job) Subject() string {
	return store.SubjectJobs + "." + string(j.Kind) + "." + j.Key()
}

// String names the job in messages: kind, key, short commit and delivery.
func (j Job) String() string {
	return fmt.Sprintf("%s %s@%.12s (delivery %s)", j.Kind, j.Key(), j.Commit, j.Delivery)
}
