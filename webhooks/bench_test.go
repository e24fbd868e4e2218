package webhooks

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cimdeploy/cimdeploy/pipeline/queue"
)

// discardQueue stores nothing: BenchmarkServeHTTP measures the Receiver's own work.
type discardQueue struct{}

func (discardQueue) Enqueue(context.Context, queue.Job) (bool, error) { return false, nil }

// BenchmarkServeHTTP measures one delivery through the Receiver (signature, decoding, routing,
// metrics, log line to a discarding handler) without the network and without storing the job.
// The load test of the whole daemon path is webhookbench.BenchmarkReceivers.
func BenchmarkServeHTTP(b *testing.B) {
	for _, bm := range []struct{ event, file string }{
		{"push", "push-new-branch.json"},
		{"pull_request", "pull_request.opened.json"},
	} {
		b.Run(bm.event, func(b *testing.B) {
			rcv, err := New(Config{Repository: "Codertocat/Hello-World", DeployBranch: "master", Secret: testSecret},
				discardQueue{}, slog.New(slog.DiscardHandler), nil)
			if err != nil {
				b.Fatal(err)
			}
			body := readPayload(b, bm.file)
			signature := sign(testSecret, body)
			b.SetBytes(int64(len(body)))
			i := 0
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("X-GitHub-Event", bm.event)
				r.Header.Set("X-GitHub-Delivery", fmt.Sprint("bench-", i))
				r.Header.Set("X-Hub-Signature-256", signature)
				w := httptest.NewRecorder()
				rcv.ServeHTTP(w, r)
				if w.Code != http.StatusAccepted {
					b.Fatalf("status %d %q", w.Code, w.Body)
				}
				i++
			}
		})
	}
}
