package forge

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// TestRetryDelay feeds the errors go-github v60's own CheckResponse makes of GitHub's answers.
func TestRetryDelay(t *testing.T) {
	t.Parallel()
	r := &Reporter{cfg: Config{RetryMin: 100 * time.Millisecond, RetryMax: time.Second, SecondaryWait: time.Minute}.withDefaults()}
	r.base, r.cancel = t.Context(), func() {}
	reset := time.Now().Add(30 * time.Second)
	answer := func(code int, body string, hdr map[string]string) error {
		req, _ := http.NewRequest("POST", "https://api.github.com/repos/o/r/statuses/x", nil)
		resp := &http.Response{StatusCode: code, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body)), Request: req}
		for k, v := range hdr {
			resp.Header.Set(k, v)
		}
		return github.CheckResponse(resp)
	}
	secondary := `{"message":"You have exceeded a secondary rate limit.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}`
	for _, tc := range []struct {
		name     string
		err      error
		min, max time.Duration
		retry    bool
	}{
		{name: "429 with Retry-After (a plain ErrorResponse in v60)", err: answer(429, `{"message":"slow down"}`, map[string]string{"Retry-After": "7"}), min: 7 * time.Second, max: 7 * time.Second, retry: true},
		{name: "429 without headers", err: answer(429, `{}`, nil), min: time.Minute, max: time.Minute, retry: true},
		{name: "secondary 403 with Retry-After", err: answer(403, secondary, map[string]string{"Retry-After": "3"}), min: 3 * time.Second, max: 3 * time.Second, retry: true},
		{name: "secondary 403 without Retry-After", err: answer(403, secondary, nil), min: time.Minute, max: time.Minute, retry: true},
		{name: "secondary 403 by message only", err: answer(403, `{"message":"You have exceeded a secondary rate limit"}`, nil), min: time.Minute, max: time.Minute, retry: true},
		{name: "primary limit exhausted", err: answer(403, `{"message":"API rate limit exceeded"}`, map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": strconv.FormatInt(reset.Unix(), 10)}), min: 28 * time.Second, max: 31 * time.Second, retry: true},
		{name: "server error", err: answer(502, `{}`, nil), min: 50 * time.Millisecond, max: 100 * time.Millisecond, retry: true},
		{name: "validation failed", err: answer(422, `{"message":"Validation Failed"}`, nil), retry: false},
		{name: "not found", err: answer(404, `{"message":"Not Found"}`, nil), retry: false},
		{name: "token refused", err: answer(401, `{"message":"Bad credentials"}`, nil), retry: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, retry := r.retryDelay(tc.err, 1)
			if retry != tc.retry || (retry && (d < tc.min || d > tc.max)) {
				t.Errorf("retryDelay(%T) = %s, %v; want %v within [%s, %s]", tc.err, d, retry, tc.retry, tc.min, tc.max)
			}
		})
	}
}

func TestDescriptionsBoundedAndNamed(t *testing.T) {
	t.Parallel()
	var steps []pipeline.StepResult
	for i := range 40 {
		steps = append(steps, pipeline.StepResult{Node: "node-" + strconv.Itoa(i), Status: pipeline.StatusFailed, Error: "build node-" + strconv.Itoa(i) + ": " + strings.Repeat("x", 300)})
	}
	for _, tc := range []struct {
		name   string
		stage  pipeline.StageResult
		prefix string
		state  string
	}{
		{name: "many nodes", stage: pipeline.StageResult{Name: "build", Status: pipeline.StatusFailed, Error: strings.Repeat("y", 9000), Steps: steps}, prefix: "build failed on node-0, node-1", state: "failure"},
		{name: "no nodes", stage: pipeline.StageResult{Name: "publish", Status: pipeline.StatusFailed, Error: "proxmox said no\nmore"}, prefix: "publish failed: proxmox said no", state: "failure"},
		{name: "panic", stage: pipeline.StageResult{Name: "check", Status: pipeline.StatusFailed, Error: "check: panic: nil map"}, prefix: "check failed: check: panic", state: "error"},
		{name: "cancelled", stage: pipeline.StageResult{Name: "rollout", Status: pipeline.StatusCancelled, Error: "context canceled"}, prefix: "rollout cancelled", state: "error"},
		{name: "long problem", stage: pipeline.StageResult{Name: "generate", Status: pipeline.StatusFailed, Error: "1 problem(s) in the events:\n  events/a.jsonl:1: event 1: data.name: " + strings.Repeat("é", 500)}, prefix: "generate: events/a.jsonl:1: event 1: data.name: éé", state: "failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := describeFailure(&tc.stage, pipeline.Run{})
			if n := len([]rune(d)); n > MaxDescription || !strings.HasPrefix(d, tc.prefix) || strings.Contains(d, "\n") {
				t.Errorf("description (%d characters) = %q, want at most %d starting %q on one line", n, d, MaxDescription, tc.prefix)
			}
			if s := stateOf(&tc.stage); s != tc.state {
				t.Errorf("state = %s, want %s", s, tc.state)
			}
		})
	}
}
