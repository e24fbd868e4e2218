package webhooks

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/pipeline"
)

// FuzzReceiver posts arbitrary bodies, events and content types. It never panics; an unsigned (or
// wrongly signed) delivery is always 401 and queues nothing; a signed one queues at most one job,
// and only a job whose ref and commit are valid, for the configured repository.
func FuzzReceiver(f *testing.F) {
	m := loadManifest(f)
	for _, d := range m.Deliveries {
		body, err := os.ReadFile(filepath.Join(payloadDir, d.File))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body, d.Headers["X-GitHub-Event"], d.Headers["Content-Type"], true)
		f.Add(body, d.Headers["X-GitHub-Event"], d.Headers["Content-Type"], false)
	}
	f.Add([]byte(`{"ref":"refs/heads/master","after":"fd489864e7642b48eaad6e3f155c10e46810ec72","repository":{"full_name":"Codertocat/Hello-World"}}`), "push", "application/json", true)
	f.Add([]byte(`{"ref":"refs/heads/../master","after":"fd489864e7642b48eaad6e3f155c10e46810ec72","repository":{"full_name":"Codertocat/Hello-World"}}`), "push", "application/json", true)
	f.Add([]byte(`payload=%7B%22ref%22%3A1%7D`), "push", "application/x-www-form-urlencoded", true)

	f.Fuzz(func(t *testing.T, body []byte, event, contentType string, signed bool) {
		fx := newFixture(t, Config{Repository: "Codertocat/Hello-World", MaxBody: 64 << 10})
		h := map[string]string{
			"Content-Type":      contentType,
			"X-GitHub-Event":    event,
			"X-GitHub-Delivery": "fuzz-1",
		}
		if signed {
			h["X-Hub-Signature-256"] = sign(testSecret, body)
		} else {
			h["X-Hub-Signature-256"] = sign([]byte("another secret"), body)
		}
		w := fx.post(h, body)
		jobs := fx.queue.queued()
		if !signed {
			if w.Code != http.StatusUnauthorized && w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("unsigned delivery: status %d %q", w.Code, w.Body)
			}
			if len(jobs) != 0 {
				t.Fatalf("unsigned delivery queued %+v", jobs)
			}
			return
		}
		if len(jobs) > 1 {
			t.Fatalf("one delivery queued %d jobs", len(jobs))
		}
		if len(jobs) == 1 {
			j := jobs[0]
			if w.Code != http.StatusAccepted {
				t.Fatalf("queued %+v but answered %d", j, w.Code)
			}
			if !isCommit(j.Commit) || j.Commit == zeroCommit {
				t.Fatalf("queued commit %q", j.Commit)
			}
			if err := checkout.ValidateRev(j.Ref); err != nil {
				t.Fatalf("queued ref: %v", err)
			}
			switch j.Kind {
			case pipeline.KindDeploy:
				if j.Ref != "refs/heads/master" || j.Branch != "master" {
					t.Fatalf("deploy of %q (branch %q)", j.Ref, j.Branch)
				}
			case pipeline.KindValidate:
				if !strings.HasPrefix(j.Ref, "refs/pull/") || j.PullRequest <= 0 {
					t.Fatalf("validate of %q (#%d)", j.Ref, j.PullRequest)
				}
			default:
				t.Fatalf("job kind %q", j.Kind)
			}
			if j.Repository != "Codertocat/Hello-World" || j.Delivery != "fuzz-1" {
				t.Fatalf("job %+v", j)
			}
		}
	})
}
