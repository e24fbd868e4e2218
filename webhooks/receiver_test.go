package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sethvargo/go-envconfig"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/queue"
)

const payloadDir = "testdata/github-payloads"

// fakeQueue is a Queue in memory: it records the jobs, reports a delivery it holds already as a
// duplicate, and fails every call while err is set.
type fakeQueue struct {
	mu   sync.Mutex
	jobs []queue.Job
	err  error
}

func (q *fakeQueue) Enqueue(ctx context.Context, j queue.Job) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return false, q.err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	for _, have := range q.jobs {
		if have.Delivery == j.Delivery {
			return true, nil
		}
	}
	q.jobs = append(q.jobs, j)
	return false, nil
}

func (q *fakeQueue) queued() []queue.Job {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queue.Job(nil), q.jobs...)
}

// syncBuffer is a log destination the handler and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// manifest is deliveries.json: the headers GitHub sends with each fixture, and the secret.
type manifest struct {
	Secret     string `json:"secret"`
	Deliveries []struct {
		File    string            `json:"file"`
		Headers map[string]string `json:"headers"`
	} `json:"deliveries"`
}

func loadManifest(t testing.TB) manifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(payloadDir, "deliveries.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("deliveries.json: %v", err)
	}
	return m
}

func readPayload(t testing.TB, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(payloadDir, file))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

var (
	testSecret = []byte("cimdeploy-test-secret") // the secret deliveries.json was signed with
	received   = time.Date(2026, 12, 3, 21, 0, 0, 0, time.UTC)
)

func sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

type fixture struct {
	rcv   *Receiver
	queue *fakeQueue
	log   *syncBuffer
}

func newFixture(t testing.TB, cfg Config) fixture {
	t.Helper()
	if cfg.Secret == nil {
		cfg.Secret = testSecret
	}
	if cfg.Repository == "" {
		cfg.Repository = "Codertocat/Hello-World"
	}
	if cfg.DeployBranch == "" {
		cfg.DeployBranch = "master"
	}
	cfg.Now = func() time.Time { return received }
	f := fixture{queue: &fakeQueue{}, log: &syncBuffer{}}
	var err error
	f.rcv, err = New(cfg, f.queue, slog.New(slog.NewJSONHandler(f.log, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// post sends one delivery with the given headers to the receiver.
func (f fixture) post(headers map[string]string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.rcv.ServeHTTP(w, r)
	return w
}

// signedHeaders are the headers of a JSON delivery of event, signed with the test secret.
func signedHeaders(event, delivery string, body []byte) map[string]string {
	return map[string]string{
		"Content-Type":        "application/json",
		"X-GitHub-Event":      event,
		"X-GitHub-Delivery":   delivery,
		"X-Hub-Signature-256": sign(testSecret, body),
	}
}

func (f fixture) count(event, outcome, reason string) float64 {
	return testutil.ToFloat64(f.rcv.metrics.deliveries.WithLabelValues(event, outcome, reason))
}

// TestReplay posts every fixture with the headers and the signature GitHub sent it with, and checks
// the answer and the job queued, or the reason it was ignored.
func TestReplay(t *testing.T) {
	t.Parallel()
	const (
		prHead  = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
		hello   = "Codertocat/Hello-World"
		argo    = "jessesuen/test-repo"
		sample  = "binkkatal/sample_app"
		argoSHA = "63738bb582c8b540af7bcfc18f87c575c3ed66e0"
	)
	validate := func(delivery string) *queue.Job {
		return &queue.Job{Delivery: delivery, Event: "pull_request", Kind: pipeline.KindValidate, Ref: "refs/pull/2/head",
			Commit: prHead, PullRequest: 2, Repository: hello, Sender: "Codertocat", Received: received}
	}
	deploy := func(delivery, repo, commit, sender string) *queue.Job {
		return &queue.Job{Delivery: delivery, Event: "push", Kind: pipeline.KindDeploy, Ref: "refs/heads/master",
			Commit: commit, Branch: "master", Repository: repo, Sender: sender, Received: received}
	}
	tests := map[string]struct {
		repo   string
		status int
		job    *queue.Job
		reason string // the reason label when nothing is queued
		body   string // in the answer
	}{
		"create.json":                 {repo: hello, status: 202, reason: reasonEvent, body: `ignored: "create" events are not used`},
		"delete.json":                 {repo: hello, status: 202, reason: reasonEvent, body: `ignored: "delete" events are not used`},
		"ping.json":                   {repo: hello, status: 200, reason: reasonPing, body: "pong: Anything added dilutes everything else."},
		"ping.with-app_id.json":       {repo: hello, status: 200, reason: reasonPing, body: "pong: Anything added dilutes everything else."},
		"ping.with-organization.json": {repo: hello, status: 200, reason: reasonPing, body: "pong: Anything added dilutes everything else."},
		"pull_request.closed.json":    {repo: hello, status: 202, reason: reasonAction, body: `ignored: pull_request action "closed"`},
		"pull_request.converted_to_draft.json": {repo: hello, status: 202, reason: reasonAction,
			body: `ignored: pull_request action "converted_to_draft"`},
		"pull_request.labeled.json": {repo: hello, status: 202, reason: reasonAction, body: `ignored: pull_request action "labeled"`},
		"pull_request.opened.json":  {repo: hello, status: 202, job: validate("00000000-0000-4000-8000-000000000011")},
		"pull_request.opened.multiselect-custom-properties.json": {repo: hello, status: 202,
			job: validate("00000000-0000-4000-8000-000000000012")},
		"pull_request.reopened.json":    {repo: hello, status: 202, job: validate("00000000-0000-4000-8000-000000000013")},
		"pull_request.synchronize.json": {repo: hello, status: 202, job: validate("00000000-0000-4000-8000-000000000014")},
		"push-delete-branch.json": {repo: hello, status: 202, reason: reasonDeleted,
			body: "ignored: branch refs/heads/feature-branch was deleted"},
		"push-delete-tag.json": {repo: hello, status: 202, reason: reasonTag,
			body: "ignored: refs/tags/simple-tag is not a branch: only pushes to refs/heads/master deploy"},
		"push-delete-tag.with-installation.json": {repo: hello, status: 202, reason: reasonTag,
			body: "ignored: refs/tags/simple-tag is not a branch"},
		"push-forced.json": {repo: argo, status: 202,
			job: deploy("00000000-0000-4000-8000-000000000018", argo, argoSHA, "jessesuen")},
		"push-new-branch.json": {repo: hello, status: 202,
			job: deploy("00000000-0000-4000-8000-000000000019", hello, "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "Codertocat")},
		"push-new-branch.multiselect-custom-properties.json": {repo: hello, status: 202,
			job: deploy("00000000-0000-4000-8000-000000000020", hello, "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "Codertocat")},
		"push-tag.json": {repo: argo, status: 202, reason: reasonTag, body: "ignored: refs/tags/v1.0 is not a branch"},
		"push.json": {repo: sample, status: 202,
			job: deploy("00000000-0000-4000-8000-000000000022", sample, "fd489864e7642b48eaad6e3f155c10e46810ec72", "binkkatal")},
		"push.form-urlencoded.txt": {repo: sample, status: 202,
			job: deploy("00000000-0000-4000-8000-000000000099", sample, "fd489864e7642b48eaad6e3f155c10e46810ec72", "binkkatal")},
	}
	m := loadManifest(t)
	if string(testSecret) != m.Secret {
		t.Fatalf("deliveries.json is signed with %q, the tests with %q", m.Secret, testSecret)
	}
	files, err := filepath.Glob(filepath.Join(payloadDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	replayed := map[string]bool{}
	for _, d := range m.Deliveries {
		replayed[d.File] = true
		t.Run(d.File, func(t *testing.T) {
			t.Parallel()
			tt, ok := tests[d.File]
			if !ok {
				t.Fatalf("no expectation for %s", d.File)
			}
			f := newFixture(t, Config{Repository: tt.repo, DeployBranch: "master"})
			w := f.post(d.Headers, readPayload(t, d.File))
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d; body %q", w.Code, tt.status, w.Body)
			}
			jobs := f.queue.queued()
			event := d.Headers["X-GitHub-Event"]
			if tt.job == nil {
				if len(jobs) != 0 {
					t.Errorf("queued %+v, want nothing", jobs)
				}
				if !strings.Contains(w.Body.String(), tt.body) {
					t.Errorf("body %q, want it to contain %q", w.Body, tt.body)
				}
				if got := f.count(event, outcomeIgnored, tt.reason); got != 1 {
					t.Errorf("deliveries_total{event=%q,outcome=ignored,reason=%q} = %v, want 1", event, tt.reason, got)
				}
				return
			}
			if len(jobs) != 1 || !reflect.DeepEqual(jobs[0], *tt.job) {
				t.Fatalf("queued %+v\nwant [%+v]", jobs, *tt.job)
			}
			if got := f.count(event, outcomeQueued, ""); got != 1 {
				t.Errorf("deliveries_total{event=%q,outcome=queued} = %v, want 1", event, got)
			}
			// The same delivery again (GitHub's redelivery): 202, nothing new queued.
			w = f.post(d.Headers, readPayload(t, d.File))
			if w.Code != http.StatusAccepted || len(f.queue.queued()) != 1 {
				t.Errorf("redelivery: status %d, %d jobs; want 202 and still 1 job", w.Code, len(f.queue.queued()))
			}
			if got := f.count(event, outcomeDuplicate, ""); got != 1 {
				t.Errorf("deliveries_total{outcome=duplicate} = %v, want 1", got)
			}
			if !strings.Contains(f.log.String(), `"msg":"duplicate delivery"`) {
				t.Errorf("log has no duplicate delivery line:\n%s", f.log)
			}
		})
	}
	for _, path := range files {
		name := filepath.Base(path)
		if name != "deliveries.json" && name != "SOURCES.md" && !replayed[name] {
			t.Errorf("%s is not in deliveries.json: every fixture is replayed", name)
		}
	}
}

// TestSignature: a delivery without the right signature is refused before its body is read, and
// neither the body nor the signature reaches the log.
func TestSignature(t *testing.T) {
	t.Parallel()
	body := readPayload(t, "push.json")
	other := readPayload(t, "push-forced.json")
	tests := []struct {
		name      string
		signature string
		reason    string
	}{
		{name: "missing", signature: "", reason: "missing"},
		{name: "other secret", signature: sign([]byte("not-the-secret"), body), reason: "mismatch"},
		{name: "other body", signature: sign(testSecret, other), reason: "mismatch"},
		{name: "sha1 prefix", signature: "sha1=" + strings.TrimPrefix(sign(testSecret, body), "sha256="), reason: "malformed"},
		{name: "not hex", signature: "sha256=" + strings.Repeat("zz", 32), reason: "malformed"},
		{name: "short", signature: sign(testSecret, body)[:40], reason: "malformed"},
		{name: "uppercase prefix", signature: "SHA256=" + strings.TrimPrefix(sign(testSecret, body), "sha256="), reason: "malformed"},
		{name: "truncated body", signature: sign(testSecret, body[:len(body)-1]), reason: "mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{Repository: "binkkatal/sample_app"})
			h := signedHeaders("push", "bad-signature-1", body)
			h["X-Hub-Signature-256"] = tt.signature
			w := f.post(h, body)
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401; body %q", w.Code, w.Body)
			}
			if jobs := f.queue.queued(); len(jobs) != 0 {
				t.Errorf("queued %+v", jobs)
			}
			if got := f.count("push", outcomeBadSignature, tt.reason); got != 1 {
				t.Errorf("deliveries_total{outcome=bad_signature,reason=%q} = %v, want 1", tt.reason, got)
			}
			log := f.log.String()
			for _, want := range []string{`"delivery":"bad-signature-1"`, `"event":"push"`, `"remote":"192.0.2.1:1234"`} {
				if !strings.Contains(log, want) {
					t.Errorf("log lacks %s:\n%s", want, log)
				}
			}
			for _, secret := range []string{"fd489864e7642b48eaad6e3f155c10e46810ec72", "binkkatal", string(testSecret)} {
				if strings.Contains(log, secret) {
					t.Errorf("log shows %q:\n%s", secret, log)
				}
			}
			if h := strings.TrimPrefix(tt.signature, "sha256="); len(h) > 8 && strings.Contains(log+w.Body.String(), h) {
				t.Errorf("log or answer shows the signature:\n%s\n%s", log, w.Body)
			}
		})
	}
}

// TestBodyLimit: a body over MaxBody is refused with 413, whether its length is announced or not.
func TestBodyLimit(t *testing.T) {
	t.Parallel()
	body := readPayload(t, "push.json")
	f := newFixture(t, Config{Repository: "binkkatal/sample_app", MaxBody: int64(len(body)) - 1})
	w := f.post(signedHeaders("push", "too-large-1", body), body)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", w.Code)
	}

	// Chunked, over a real connection: no Content-Length, MaxBytesReader stops the read.
	srv := httptest.NewServer(f.rcv)
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, io.MultiReader(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range signedHeaders("push", "too-large-2", body) {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || req.ContentLength != 0 {
		t.Fatalf("chunked: status %d (content length %d), want 413", resp.StatusCode, req.ContentLength)
	}
	if got := f.count("push", outcomeTooLarge, ""); got != 2 {
		t.Errorf("deliveries_total{outcome=too_large} = %v, want 2", got)
	}
	if jobs := f.queue.queued(); len(jobs) != 0 {
		t.Errorf("queued %+v", jobs)
	}

	// Exactly at the limit is fine.
	f = newFixture(t, Config{Repository: "binkkatal/sample_app", MaxBody: int64(len(body))})
	if w := f.post(signedHeaders("push", "at-limit", body), body); w.Code != http.StatusAccepted {
		t.Fatalf("body of MaxBody bytes: status %d, want 202; %q", w.Code, w.Body)
	}
}

// TestFormEncoded: the form body's signature covers the form bytes, and its payload field is the JSON.
func TestFormEncoded(t *testing.T) {
	t.Parallel()
	body := readPayload(t, "push.json")
	form := []byte(url.Values{"payload": {string(body)}}.Encode())
	tests := []struct {
		name   string
		body   []byte
		sign   []byte
		status int
	}{
		{name: "signed form", body: form, sign: form, status: http.StatusAccepted},
		{name: "signature over the JSON instead", body: form, sign: body, status: http.StatusUnauthorized},
		{name: "no payload field", body: []byte("other=1"), sign: []byte("other=1"), status: http.StatusBadRequest},
		{name: "two payload fields", body: append(append([]byte{}, form...), "&payload=%7B%7D"...), sign: nil, status: http.StatusBadRequest},
		{name: "bad escape", body: []byte("payload=%zz"), sign: []byte("payload=%zz"), status: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{Repository: "binkkatal/sample_app"})
			signed := tt.sign
			if signed == nil {
				signed = tt.body
			}
			h := signedHeaders("push", "form-1", signed)
			h["Content-Type"] = "application/x-www-form-urlencoded"
			w := f.post(h, tt.body)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d; %q", w.Code, tt.status, w.Body)
			}
			want := 0
			if tt.status == http.StatusAccepted {
				want = 1
			}
			if jobs := f.queue.queued(); len(jobs) != want {
				t.Fatalf("queued %+v, want %d jobs", jobs, want)
			}
		})
	}
}

// TestContentType: JSON (with a charset) and forms are read; anything else is 415 once signed.
func TestContentType(t *testing.T) {
	t.Parallel()
	body := readPayload(t, "push.json")
	for _, tt := range []struct {
		contentType string
		status      int
	}{
		{contentType: "application/json", status: http.StatusAccepted},
		{contentType: "application/json; charset=utf-8", status: http.StatusAccepted},
		{contentType: "Application/JSON", status: http.StatusAccepted},
		{contentType: "", status: http.StatusUnsupportedMediaType},
		{contentType: "text/plain", status: http.StatusUnsupportedMediaType},
		{contentType: "application/xml", status: http.StatusUnsupportedMediaType},
		{contentType: "multipart/form-data; boundary=x", status: http.StatusUnsupportedMediaType},
		{contentType: "application/json; charset", status: http.StatusUnsupportedMediaType},
	} {
		t.Run(tt.contentType, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{Repository: "binkkatal/sample_app"})
			h := signedHeaders("push", "ct-1", body)
			h["Content-Type"] = tt.contentType
			if w := f.post(h, body); w.Code != tt.status {
				t.Fatalf("status %d, want %d; %q", w.Code, tt.status, w.Body)
			}
		})
	}
}

// TestHeaders: X-GitHub-Event and X-GitHub-Delivery are required and must be plain tokens; the
// method must be POST.
func TestHeaders(t *testing.T) {
	t.Parallel()
	body := readPayload(t, "push.json")
	for _, tt := range []struct {
		name     string
		event    string
		delivery string
		status   int
		want     string
	}{
		{name: "no event", event: "", delivery: "d-1", status: 400, want: "no X-GitHub-Event header"},
		{name: "no delivery", event: "push", delivery: "", status: 400, want: "no X-GitHub-Delivery header"},
		{name: "delivery too long", event: "push", delivery: strings.Repeat("a", 101), status: 400, want: "want at most 100"},
		{name: "delivery with a slash", event: "push", delivery: "a/../b", status: 400, want: `X-GitHub-Delivery "a/../b"`},
		{name: "delivery with a space", event: "push", delivery: "a b", status: 400, want: "X-GitHub-Delivery"},
		{name: "event with a dot", event: "push.x", delivery: "d-1", status: 400, want: "X-GitHub-Event"},
		{name: "longest delivery", event: "push", delivery: strings.Repeat("a", 100), status: 202, want: "queued deploy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{Repository: "binkkatal/sample_app"})
			w := f.post(signedHeaders(tt.event, tt.delivery, body), body)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("status %d %q, want %d and %q", w.Code, w.Body, tt.status, tt.want)
			}
		})
	}
	t.Run("GET", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Config{Repository: "binkkatal/sample_app"})
		w := httptest.NewRecorder()
		f.rcv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/webhooks/github", nil))
		if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "POST" {
			t.Fatalf("status %d, Allow %q; want 405 and POST", w.Code, w.Header().Get("Allow"))
		}
		if got := f.count("none", outcomeBadRequest, "method"); got != 1 {
			t.Errorf("deliveries_total{outcome=bad_request,reason=method} = %v, want 1", got)
		}
	})
}

// resign changes a fixture's JSON with edit and returns the new body.
func resign(t *testing.T, file string, edit func(map[string]any)) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(readPayload(t, file), &doc); err != nil {
		t.Fatal(err)
	}
	edit(doc)
	body, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func set(path string, v any) func(map[string]any) {
	return func(doc map[string]any) {
		keys := strings.Split(path, ".")
		m := doc
		for _, k := range keys[:len(keys)-1] {
			m = m[k].(map[string]any)
		}
		m[keys[len(keys)-1]] = v
	}
}

// TestRepository: deliveries of other repositories are ignored; the name is compared without case.
func TestRepository(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		configured string
		file       string
		status     int
		queued     int
		want       string
	}{
		{configured: "binkkatal/sample_app", file: "push.json", queued: 1, want: "queued deploy of refs/heads/master"},
		{configured: "BinkKatal/Sample_App", file: "push.json", queued: 1, want: "queued deploy"},
		{configured: "binkkatal/other", file: "push.json", want: `ignored: repository "binkkatal/sample_app" is not binkkatal/other`},
		{configured: "other/sample_app", file: "pull_request.opened.json", want: `ignored: repository "Codertocat/Hello-World" is not other/sample_app`},
	} {
		t.Run(tt.configured+" "+tt.file, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{Repository: tt.configured})
			body := readPayload(t, tt.file)
			event, _, _ := strings.Cut(tt.file, ".")
			w := f.post(signedHeaders(event, "repo-1", body), body)
			if w.Code != http.StatusAccepted || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("status %d %q, want 202 and %q", w.Code, w.Body, tt.want)
			}
			jobs := f.queue.queued()
			if len(jobs) != tt.queued {
				t.Fatalf("queued %+v, want %d jobs", jobs, tt.queued)
			}
			if tt.queued == 1 && jobs[0].Repository != tt.configured {
				t.Errorf("job repository %q, want the configured %q", jobs[0].Repository, tt.configured)
			}
			if tt.queued == 0 {
				if got := f.count(event, outcomeIgnored, reasonRepository); got != 1 {
					t.Errorf("deliveries_total{reason=repository} = %v, want 1", got)
				}
			}
		})
	}
}

// TestPushRefs: hostile or odd refs and commits in a signed push are refused (400) or ignored, never
// queued; only the deploy branch deploys.
func TestPushRefs(t *testing.T) {
	t.Parallel()
	const after = "fd489864e7642b48eaad6e3f155c10e46810ec72"
	for _, tt := range []struct {
		name   string
		ref    any
		after  any
		status int
		want   string
	}{
		{name: "deploy branch", ref: "refs/heads/master", after: after, status: 202, want: "queued deploy"},
		{name: "other branch", ref: "refs/heads/feature", after: after, status: 202, want: "ignored: push to refs/heads/feature"},
		{name: "prefix of the branch", ref: "refs/heads/maste", after: after, status: 202, want: "ignored: push to"},
		{name: "branch in a folder", ref: "refs/heads/x/master", after: after, status: 202, want: "ignored: push to"},
		{name: "tag named like the branch", ref: "refs/tags/master", after: after, status: 202, want: "is not a branch"},
		{name: "dot dot", ref: "refs/heads/../heads/master", after: after, status: 400, want: "must not contain '..'"},
		{name: "newline", ref: "refs/heads/master\n", after: after, status: 400, want: "control character"},
		{name: "NUL", ref: "refs/heads/mas\x00ter", after: after, status: 400, want: "control character"},
		{name: "space", ref: "refs/heads/ma ster", after: after, status: 400, want: "must not contain ' '"},
		{name: "reflog", ref: "refs/heads/master@{1}", after: after, status: 400, want: "'@{'"},
		{name: "lock", ref: "refs/heads/master.lock", after: after, status: 400, want: ".lock"},
		{name: "hidden component", ref: "refs/heads/.master", after: after, status: 400, want: "must not begin with '.'"},
		{name: "double slash", ref: "refs/heads//master", after: after, status: 400, want: "'//'"},
		{name: "colon", ref: "refs/heads/a:b", after: after, status: 400, want: "':'"},
		{name: "short name", ref: "master", after: after, status: 400, want: "want refs/heads/<branch> or refs/tags/<tag>"},
		{name: "remote ref", ref: "refs/remotes/origin/master", after: after, status: 400, want: "want refs/heads/"},
		{name: "pull ref", ref: "refs/pull/1/head", after: after, status: 400, want: "want refs/heads/"},
		{name: "empty branch", ref: "refs/heads/", after: after, status: 400, want: "missing name"},
		{name: "empty", ref: "", after: after, status: 400, want: "ref \"\""},
		{name: "too long", ref: "refs/heads/" + strings.Repeat("a", 300), after: after, status: 400, want: "longer than 255 bytes"},
		{name: "ref not a string", ref: 42, after: after, status: 400, want: "field ref: want string, got JSON number"},
		{name: "short commit", ref: "refs/heads/master", after: after[:7], status: 400, want: "want a commit id"},
		{name: "uppercase commit", ref: "refs/heads/master", after: strings.ToUpper(after), status: 400, want: "want a commit id"},
		{name: "sha256 commit", ref: "refs/heads/master", after: after + after[:24], status: 400, want: "want a commit id"},
		{name: "commit with an option", ref: "refs/heads/master", after: "--upload-pack=touch" + after[:21], status: 400, want: "want a commit id"},
		{name: "missing commit", ref: "refs/heads/master", after: nil, status: 400, want: "after \"\""},
		{name: "deleted by zeros", ref: "refs/heads/master", after: zeroCommit, status: 202, want: "was deleted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{Repository: "binkkatal/sample_app"})
			body := resign(t, "push.json", func(doc map[string]any) {
				doc["ref"] = tt.ref
				doc["after"] = tt.after
			})
			w := f.post(signedHeaders("push", "ref-1", body), body)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("status %d %q, want %d and %q", w.Code, w.Body, tt.status, tt.want)
			}
			jobs := f.queue.queued()
			if (tt.want == "queued deploy") != (len(jobs) == 1) || len(jobs) > 1 {
				t.Fatalf("queued %+v", jobs)
			}
			if tt.status == 400 {
				if got := f.count("push", outcomeBadRequest, "payload"); got != 1 {
					t.Errorf("deliveries_total{outcome=bad_request,reason=payload} = %v, want 1", got)
				}
			}
		})
	}
	t.Run("deleted flag", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Config{Repository: "binkkatal/sample_app"})
		body := resign(t, "push.json", set("deleted", true))
		if w := f.post(signedHeaders("push", "del-1", body), body); w.Code != 202 || len(f.queue.queued()) != 0 {
			t.Fatalf("status %d %q, %d jobs; want 202 and nothing queued", w.Code, w.Body, len(f.queue.queued()))
		}
	})
	t.Run("other deploy branch", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Config{Repository: "binkkatal/sample_app", DeployBranch: "release/1.x"})
		body := resign(t, "push.json", set("ref", "refs/heads/release/1.x"))
		w := f.post(signedHeaders("push", "rel-1", body), body)
		jobs := f.queue.queued()
		if w.Code != 202 || len(jobs) != 1 || jobs[0].Branch != "release/1.x" || jobs[0].Ref != "refs/heads/release/1.x" {
			t.Fatalf("status %d %q, jobs %+v; want a deploy of release/1.x", w.Code, w.Body, jobs)
		}
	})
}

// TestPullRequests: forks, numbers and head commits of a signed pull_request.
func TestPullRequests(t *testing.T) {
	t.Parallel()
	const head = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
	for _, tt := range []struct {
		name   string
		edit   func(map[string]any)
		status int
		want   string
		fork   bool
	}{
		{name: "same repository", edit: func(map[string]any) {}, status: 202, want: "queued validate of refs/pull/2/head"},
		{name: "fork", edit: set("pull_request.head.repo.full_name", "mallory/Hello-World"), status: 202, want: "queued validate", fork: true},
		{name: "same repository in another case", edit: set("pull_request.head.repo.full_name", "codertocat/hello-world"), status: 202, want: "queued validate"},
		{name: "head repository deleted", edit: set("pull_request.head.repo", nil), status: 202, want: "queued validate", fork: true},
		{name: "no number", edit: func(doc map[string]any) {
			delete(doc, "number")
			doc["pull_request"].(map[string]any)["number"] = 0
		}, status: 400, want: "number 0: want a positive number"},
		{name: "negative number", edit: func(doc map[string]any) {
			doc["number"] = -2
			doc["pull_request"].(map[string]any)["number"] = -2
		}, status: 400, want: "number -2"},
		{name: "numbers differ", edit: set("number", 3), status: 400, want: "number 3 but pull_request.number 2"},
		{name: "number too large", edit: set("number", 1e300), status: 400, want: "field number: want int"},
		{name: "number as text", edit: set("number", "2"), status: 400, want: "field number: want int, got JSON string"},
		{name: "bad head", edit: set("pull_request.head.sha", "ec26c3e"), status: 400, want: "pull_request.head.sha \"ec26c3e\""},
		{name: "no pull request", edit: func(doc map[string]any) { delete(doc, "pull_request") }, status: 400, want: "no pull_request object"},
		{name: "no repository", edit: func(doc map[string]any) { delete(doc, "repository") }, status: 400, want: "no repository.full_name"},
		{name: "odd action", edit: set("action", "opened\n"), status: 202, want: `pull_request action "opened\n"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{})
			body := resign(t, "pull_request.opened.json", tt.edit)
			w := f.post(signedHeaders("pull_request", "pr-1", body), body)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("status %d %q, want %d and %q", w.Code, w.Body, tt.status, tt.want)
			}
			jobs := f.queue.queued()
			if !strings.HasPrefix(tt.want, "queued") {
				if len(jobs) != 0 {
					t.Fatalf("queued %+v", jobs)
				}
				return
			}
			if len(jobs) != 1 || jobs[0].Fork != tt.fork || jobs[0].Commit != head || jobs[0].PullRequest != 2 {
				t.Fatalf("queued %+v, want one validate of #2 at %s with fork %v", jobs, head, tt.fork)
			}
		})
	}
}

// TestBadJSON: a signed body that is not the JSON of the event names the offset or the field.
func TestBadJSON(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		event string
		body  string
		want  string
	}{
		{event: "push", body: `{"ref": "refs/heads/master",}`, want: "push payload: invalid JSON at byte offset 29"},
		{event: "push", body: ``, want: "push payload: invalid JSON at byte offset 0"},
		{event: "push", body: `[]`, want: "push payload: field (the payload itself): want webhooks.pushPayload, got JSON array"},
		{event: "push", body: `{"repository": {"full_name": 7}}`, want: "push payload: field repository.full_name: want string, got JSON number"},
		{event: "pull_request", body: `{"pull_request": {"head": {"sha": ["x"]}}}`, want: "pull_request payload: field pull_request.head.sha: want string, got JSON array"},
		{event: "ping", body: `{"zen": `, want: "ping payload: invalid JSON"},
	} {
		t.Run(tt.event+" "+tt.body, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{})
			w := f.post(signedHeaders(tt.event, "json-1", []byte(tt.body)), []byte(tt.body))
			if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("status %d %q, want 400 and %q", w.Code, w.Body, tt.want)
			}
		})
	}
}

// TestPayloadURLsUnused: the URLs in a payload (clone_url, git_url, ...) never reach the job: the
// same push with hostile URLs queues the very same job.
func TestPayloadURLsUnused(t *testing.T) {
	t.Parallel()
	hostile := func(doc map[string]any) {
		repo := doc["repository"].(map[string]any)
		for _, k := range []string{"clone_url", "git_url", "ssh_url", "svn_url", "url", "html_url", "mirror_url", "homepage"} {
			repo[k] = "ext::sh -c touch% pwned"
		}
		doc["compare"] = "file:///etc/passwd"
	}
	for _, file := range []string{"push.json", "pull_request.opened.json"} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			event, _, _ := strings.Cut(file, ".")
			var jobs [2]queue.Job
			for i, body := range [][]byte{readPayload(t, file), resign(t, file, hostile)} {
				f := newFixture(t, Config{Repository: map[string]string{"push": "binkkatal/sample_app", "pull_request": "Codertocat/Hello-World"}[event]})
				if w := f.post(signedHeaders(event, "urls-1", body), body); w.Code != http.StatusAccepted {
					t.Fatalf("status %d %q", w.Code, w.Body)
				}
				q := f.queue.queued()
				if len(q) != 1 {
					t.Fatalf("queued %+v", q)
				}
				jobs[i] = q[0]
			}
			if jobs[0] != jobs[1] {
				t.Errorf("the payload's URLs changed the job:\n%+v\n%+v", jobs[0], jobs[1])
			}
			raw, _ := json.Marshal(jobs[1])
			if strings.Contains(string(raw), "pwned") || strings.Contains(string(raw), "://") {
				t.Errorf("job carries a URL: %s", raw)
			}
		})
	}
}

// TestEnqueueFails: a Queue error is 503 (GitHub delivers again) and logged, never 202.
func TestEnqueueFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{Repository: "binkkatal/sample_app"})
	f.queue.err = errors.New("jetstream: no responders")
	body := readPayload(t, "push.json")
	w := f.post(signedHeaders("push", "fail-1", body), body)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d %q, want 503", w.Code, w.Body)
	}
	if strings.Contains(w.Body.String(), "jetstream") {
		t.Errorf("answer shows the internal error: %q", w.Body)
	}
	if log := f.log.String(); !strings.Contains(log, `"err":"enqueue delivery fail-1: jetstream: no responders"`) || !strings.Contains(log, `"level":"ERROR"`) {
		t.Errorf("log lacks the error:\n%s", log)
	}
	if got := f.count("push", outcomeError, "enqueue"); got != 1 {
		t.Errorf("deliveries_total{outcome=error} = %v, want 1", got)
	}
	// Once the queue works again, the redelivery is queued.
	f.queue.mu.Lock()
	f.queue.err = nil
	f.queue.mu.Unlock()
	if w := f.post(signedHeaders("push", "fail-1", body), body); w.Code != http.StatusAccepted || len(f.queue.queued()) != 1 {
		t.Fatalf("redelivery: status %d, %d jobs", w.Code, len(f.queue.queued()))
	}
}

// TestNew: New refuses a config it cannot work with, saying every problem.
func TestNew(t *testing.T) {
	t.Parallel()
	q := &fakeQueue{}
	for _, tt := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "no secret", cfg: Config{Repository: "a/b"}, want: []string{"webhook secret: empty"}},
		{name: "no repository", cfg: Config{Secret: testSecret}, want: []string{"CIMDEPLOY_GITHUB_REPOSITORY \"\": empty"}},
		{name: "everything wrong", cfg: Config{Repository: "a/b/c", DeployBranch: "ma..in", MaxBody: -1, EnqueueTimeout: -time.Second},
			want: []string{"CIMDEPLOY_GITHUB_REPOSITORY \"a/b/c\": want owner/name", "CIMDEPLOY_DEPLOY_BRANCH", "'..'", "webhook secret", "CIMDEPLOY_WEBHOOK_MAX_BODY -1", "CIMDEPLOY_WEBHOOK_ENQUEUE_TIMEOUT -1s"}},
		{name: "repository with a space", cfg: Config{Repository: "a/b c", Secret: testSecret}, want: []string{`' ' is not allowed`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.cfg, q, nil, nil)
			if err == nil {
				t.Fatal("New accepted the config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := New(Config{Repository: "a/b", Secret: testSecret}, nil, nil, nil); err == nil {
		t.Error("New accepted no queue")
	}
	rcv, err := New(Config{Repository: "a/b", Secret: testSecret}, q, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rcv.cfg.DeployBranch != "main" || rcv.cfg.MaxBody != 25<<20 || rcv.cfg.EnqueueTimeout != 5*time.Second {
		t.Errorf("defaults: %+v", rcv.cfg)
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{Repository: "a/b", Secret: testSecret}, q, nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Repository: "a/b", Secret: testSecret}, q, nil, reg); err == nil {
		t.Error("two receivers registered the same metrics")
	}
	var log syncBuffer
	slog.New(slog.NewJSONHandler(&log, nil)).Info("config", "webhooks", Config{Repository: "a/b", Secret: testSecret})
	if strings.Contains(log.String(), string(testSecret)) || !strings.Contains(log.String(), `"secret_set":true`) {
		t.Errorf("a logged Config: %s", log.String())
	}
}

// TestConcurrent: many deliveries at once each queue one job (run with -race).
func TestConcurrent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{Repository: "binkkatal/sample_app"})
	body := readPayload(t, "push.json")
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if w := f.post(signedHeaders("push", fmt.Sprintf("d-%d", i%25), body), body); w.Code != http.StatusAccepted {
				t.Errorf("status %d %q", w.Code, w.Body)
			}
		})
	}
	wg.Wait()
	if n := len(f.queue.queued()); n != 25 {
		t.Errorf("%d jobs, want 25 (50 deliveries, 25 ids)", n)
	}
	if q, d := f.count("push", outcomeQueued, ""), f.count("push", outcomeDuplicate, ""); q != 25 || d != 25 {
		t.Errorf("queued %v, duplicate %v; want 25 and 25", q, d)
	}
}

// TestConfigEnv: every setting but the secret comes from CIMDEPLOY_* variables, with the defaults.
func TestConfigEnv(t *testing.T) {
	t.Parallel()
	var c Config
	err := envconfig.ProcessWith(t.Context(), &envconfig.Config{Target: &c, Lookuper: envconfig.MapLookuper(map[string]string{
		"CIMDEPLOY_GITHUB_REPOSITORY":       "acme/infra",
		"CIMDEPLOY_WEBHOOK_ENQUEUE_TIMEOUT": "2s",
	})})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Repository: "acme/infra", DeployBranch: "main", MaxBody: DefaultMaxBody, EnqueueTimeout: 2 * time.Second}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("config %+v, want %+v", c, want)
	}
}

// TestPing: a ping answers 200 with its zen on one short line, whatever the zen holds.
func TestPing(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		zen  string
		want string
	}{
		{zen: "Keep it logically awesome.", want: "pong: Keep it logically awesome.\n"},
		{zen: "two\nlines\x00\xff", want: "pong: twolines\n"},
		{zen: strings.Repeat("é", 150), want: "pong: " + strings.Repeat("é", 100) + "\n"},
	} {
		f := newFixture(t, Config{})
		body, _ := json.Marshal(map[string]any{"zen": tt.zen, "hook_id": 1})
		w := f.post(signedHeaders("ping", "ping-1", body), body)
		if w.Code != http.StatusOK || w.Body.String() != tt.want {
			t.Errorf("zen %q: status %d %q, want 200 %q", tt.zen, w.Code, w.Body, tt.want)
		}
	}
}
