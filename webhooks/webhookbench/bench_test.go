package webhookbench_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline/queue"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/webhooks"
	"github.com/cimdeploy/cimdeploy/webhooks/webhookbench"
)

var (
	duration = flag.Duration("webhookbench.duration", 5*time.Second, "how long BenchmarkReceivers loads each receiver")
	senders  = flag.Int("webhookbench.senders", 50, "concurrent senders of BenchmarkReceivers")
	rounds   = flag.Int("webhookbench.rounds", 1, "rounds of BenchmarkReceivers, each loading every receiver in turn")
	rate     = flag.Float64("webhookbench.rate", 1000, "offered load (deliveries/s) at which BenchmarkReceivers measures latency")
)

var secret = []byte("cimdeploy-test-secret")

// repository is the repository of both payloads sent, so that cimdeploy queues every delivery.
const repository = "Codertocat/Hello-World"

// deliveries are two real payloads: a push to the deploy branch (master) and a pull request opened,
// both of repository, both queued by cimdeploy.
func deliveries(tb testing.TB) []webhookbench.Delivery {
	tb.Helper()
	var ds []webhookbench.Delivery
	for _, p := range []struct{ event, file string }{
		{"push", "push-new-branch.json"},
		{"pull_request", "pull_request.opened.json"},
	} {
		body, err := os.ReadFile(filepath.Join("..", "testdata", "github-payloads", p.file))
		if err != nil {
			tb.Fatal(err)
		}
		ds = append(ds, webhookbench.NewDelivery(p.event, "application/json", body, secret))
	}
	return ds
}

// newQueue opens cimdeploy's own durable queue (pipeline/queue) on an embedded state store in a
// temporary directory, as `cimdeploy serve` does: the delivery is stored (its id claimed in the
// deliveries bucket, the job published to CIMDEPLOY_JOBS and acknowledged) before the 202.
func newQueue(tb testing.TB) *queue.Queue {
	tb.Helper()
	st, err := store.Open(tb.Context(), store.Config{DataDir: tb.TempDir()}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	// Room for every delivery of a run: the queue refuses new jobs past MaxJobs.
	q, err := queue.Open(tb.Context(), st.JetStream(), queue.Config{MaxJobs: 10_000_000}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return q
}

func cimdeploy(tb testing.TB, q webhooks.Queue) http.Handler {
	tb.Helper()
	rcv, err := webhooks.New(webhooks.Config{Repository: repository, DeployBranch: "master", Secret: secret}, q, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return rcv
}

func library(tb testing.TB) http.Handler {
	tb.Helper()
	h, err := webhookbench.Library(string(secret))
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// TestReceivers sends every receiver a few deliveries: each is answered 2xx (so the benchmark
// measures answers, not errors), a bad signature is refused, and cimdeploy stored every job.
func TestReceivers(t *testing.T) {
	t.Parallel()
	q := newQueue(t)
	ds := deliveries(t)
	for _, tt := range []struct {
		name    string
		handler http.Handler
	}{
		{name: "bare", handler: webhookbench.Bare(secret, webhooks.DefaultMaxBody)},
		{name: "go-playground", handler: library(t)},
		{name: "cimdeploy", handler: cimdeploy(t, q)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			for i, d := range ds {
				for _, signature := range []string{d.Signature, webhookbench.Sign([]byte("other"), d.Body)} {
					req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, strings.NewReader(string(d.Body)))
					req.Header.Set("Content-Type", d.ContentType)
					req.Header.Set("X-GitHub-Event", d.Event)
					req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("check-%d", i))
					req.Header.Set("X-Hub-Signature-256", signature)
					resp, err := srv.Client().Do(req)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					want := http.StatusAccepted
					if signature != d.Signature {
						want = http.StatusUnauthorized
					}
					if resp.StatusCode != want {
						t.Errorf("%s: status %d, want %d", d.Event, resp.StatusCode, want)
					}
				}
			}
		})
	}
	if depth, err := q.Depth(t.Context()); err != nil || depth != len(ds) {
		t.Errorf("the queue holds %d jobs (%v), want %d", depth, err, len(ds))
	}
}

// TestRun: Run sends deliveries with fresh ids from every sender and counts answers and errors.
func TestRun(t *testing.T) {
	t.Parallel()
	var (
		mu  sync.Mutex
		ids = map[string]bool{}
	)
	bare := webhookbench.Bare(secret, 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		dup := ids[r.Header.Get("X-GitHub-Delivery")]
		ids[r.Header.Get("X-GitHub-Delivery")] = true
		mu.Unlock()
		if dup {
			http.Error(w, "duplicate", http.StatusConflict)
			return
		}
		bare.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ds := deliveries(t)
	res, err := webhookbench.Run(t.Context(), srv.URL, 4, ds, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Errors != 0 || res.P50 <= 0 || res.P50 > res.P99 || res.P99 > res.Max {
		t.Fatalf("Run against a bare receiver: %v", res)
	}
	mu.Lock()
	n := len(ids)
	mu.Unlock()
	if n < res.Requests {
		t.Errorf("%d ids for %d deliveries", n, res.Requests)
	}

	// Paced: about rate × duration deliveries, not as many as the receiver answers.
	paced, err := webhookbench.Paced(t.Context(), srv.URL, 4, ds, time.Second, 40)
	if err != nil {
		t.Fatal(err)
	}
	if paced.Requests < 30 || paced.Requests > 44 || paced.Errors != 0 {
		t.Errorf("Paced at 40/s for 1s: %v, want about 40 deliveries", paced)
	}
	if _, err := webhookbench.Paced(t.Context(), srv.URL, 4, ds, time.Second, 0); err == nil {
		t.Error("Paced accepted a rate of 0")
	}

	// Wrongly signed deliveries are errors.
	bad := []webhookbench.Delivery{ds[0]}
	bad[0].Signature = webhookbench.Sign([]byte("other"), ds[0].Body)
	res, err = webhookbench.Run(t.Context(), srv.URL, 2, bad, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 0 || res.Errors == 0 {
		t.Errorf("Run with bad signatures: %v", res)
	}
	if _, err := webhookbench.Run(t.Context(), srv.URL, 0, ds, time.Second); err == nil {
		t.Error("Run accepted 0 senders")
	}
}

// BenchmarkReceivers loads, one after the other in the same process and with the same senders and
// payloads, a bare handler that only checks the signature, a go-playground/webhooks/v6 receiver and
// cimdeploy's Receiver storing every job in JetStream (file storage, default sync, and fsync per
// message) or storing nothing. Each runs for -webhookbench.duration after a short warm-up; ns/op means nothing here:
//
//	go test -run '^$' -bench Receivers -benchtime 1x ./webhooks/webhookbench -webhookbench.rounds=3
//
// Each round loads every receiver in turn (unlike -count, which repeats one receiver before the
// next), so a machine whose load changes weighs on all of them alike.
func BenchmarkReceivers(b *testing.B) {
	ds := deliveries(b)
	type receiver struct {
		name    string
		handler func(b *testing.B) http.Handler
	}
	receivers := []receiver{
		{name: "bare", handler: func(*testing.B) http.Handler { return webhookbench.Bare(secret, webhooks.DefaultMaxBody) }},
		{name: "go-playground", handler: func(b *testing.B) http.Handler { return library(b) }},
		{name: "cimdeploy", handler: func(b *testing.B) http.Handler { return cimdeploy(b, newQueue(b)) }},
		{name: "cimdeploy-nostore", handler: func(b *testing.B) http.Handler { return cimdeploy(b, discardQueue{}) }},
	}
	results := map[string]webhookbench.Result{}
	for range *rounds {
		for _, r := range receivers {
			b.Run(r.name, func(b *testing.B) {
				srv := httptest.NewServer(r.handler(b))
				defer srv.Close()
				url := srv.URL + "/webhooks/github"
				if _, err := webhookbench.Run(b.Context(), url, *senders, ds, 500*time.Millisecond); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				res, err := webhookbench.Run(b.Context(), url, *senders, ds, *duration)
				if err != nil {
					b.Fatal(err)
				}
				paced, err := webhookbench.Paced(b.Context(), url, *senders, ds, *duration, *rate)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if res.Errors > 0 || paced.Errors > 0 {
					b.Errorf("%d errors at saturation, %d at %v/s", res.Errors, paced.Errors, *rate)
				}
				b.ReportMetric(float64(paced.P50.Microseconds())/1000, "paced-p50-ms")
				b.ReportMetric(float64(paced.P99.Microseconds())/1000, "paced-p99-ms")
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(res.Throughput, "deliveries/s")
				b.ReportMetric(float64(res.P50.Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(res.P99.Microseconds())/1000, "p99-ms")
				results[r.name] = res
				// The targets, against this round's bare and go-playground figures.
				bare, lib := results["bare"], results["go-playground"]
				if strings.HasPrefix(r.name, "cimdeploy") && bare.Throughput > 0 && lib.P99 > 0 {
					b.ReportMetric(100*res.Throughput/bare.Throughput, "%-of-bare")
					b.ReportMetric(float64(res.P99)/float64(lib.P99), "p99/go-playground")
				}
				b.Logf("%s: at saturation %v; at %v deliveries/s offered %v", r.name, res, *rate, paced)
			})
		}
	}
}

// discardQueue stores nothing: cimdeploy-nostore shows what the Receiver costs without the store.
type discardQueue struct{}

func (discardQueue) Enqueue(context.Context, queue.Job) (bool, error) { return false, nil }

// BenchmarkHandlers measures the CPU one delivery costs each receiver, without the network and (for
// cimdeploy) without the store: signature, decoding and answer. Steadier than BenchmarkReceivers on
// a busy machine, and it says where the time goes.
func BenchmarkHandlers(b *testing.B) {
	ds := deliveries(b)
	for _, h := range []struct {
		name    string
		handler http.Handler
	}{
		{name: "bare", handler: webhookbench.Bare(secret, webhooks.DefaultMaxBody)},
		{name: "go-playground", handler: library(b)},
		{name: "cimdeploy-nostore", handler: cimdeploy(b, discardQueue{})},
	} {
		for _, d := range ds {
			b.Run(h.name+"/"+d.Event, func(b *testing.B) {
				b.SetBytes(int64(len(d.Body)))
				i := 0
				for b.Loop() {
					r := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(string(d.Body)))
					r.Header.Set("Content-Type", d.ContentType)
					r.Header.Set("X-GitHub-Event", d.Event)
					r.Header.Set("X-GitHub-Delivery", fmt.Sprint("handler-", i))
					r.Header.Set("X-Hub-Signature-256", d.Signature)
					w := httptest.NewRecorder()
					h.handler.ServeHTTP(w, r)
					if w.Code != http.StatusAccepted {
						b.Fatalf("status %d %q", w.Code, w.Body)
					}
					i++
				}
			})
		}
	}
}
