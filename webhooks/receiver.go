package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/pipeline/queue"
)

// Queue stores jobs durably (package pipeline/queue). Enqueue returns nil only once the job is
// stored; a job whose Delivery it already holds is not stored again and reports duplicate. It is
// called from many requests at once and must be safe for concurrent use.
type Queue interface {
	Enqueue(ctx context.Context, j queue.Job) (duplicate bool, err error)
}

// Receiver is the http.Handler for GitHub's deliveries (POST only; the caller chooses the path, as
// /webhooks/github). It is safe for concurrent use and keeps no state between requests but its
// metrics: deduplication is the Queue's.
//
// Answers: 200 ping; 202 queued, duplicate or ignored; 400 missing or bad headers or payload; 401
// missing or bad signature; 405 not POST; 413 body over MaxBody; 415 neither JSON nor form-encoded;
// 503 the Queue failed (GitHub may deliver again). The body of an answer is one line of plain
// text saying why.
type Receiver struct {
	cfg     Config
	queue   Queue
	logger  *slog.Logger
	metrics *metrics
}

// New checks cfg and returns a Receiver that enqueues into q. logger nil discards; reg nil
// registers no metrics.
func New(cfg Config, q Queue, logger *slog.Logger, reg prometheus.Registerer) (*Receiver, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webhooks config: %w", err)
	}
	if q == nil {
		return nil, errors.New("webhooks: no queue")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Receiver{cfg: cfg, queue: q, logger: logger, metrics: m}, nil
}

// result is how a delivery ended.
type result struct {
	status  int
	outcome string
	reason  string
	message string     // for the log and the response body
	job     *queue.Job // the job queued (or found a duplicate)
	err     error      // the Queue's error, logged only
}

// ServeHTTP answers one delivery, then counts it and logs one line about it.
func (rcv *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	res := rcv.handle(w, r)

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(res.status)
	io.WriteString(w, res.message+"\n")

	event := r.Header.Get("X-GitHub-Event")
	rcv.metrics.deliveries.WithLabelValues(eventLabel(event), res.outcome, res.reason).Inc()
	rcv.metrics.seconds.WithLabelValues(res.outcome).Observe(time.Since(start).Seconds())
	rcv.log(r, event, res)
}

// log writes one line per delivery: never the body, the signature or the secret.
func (rcv *Receiver) log(r *http.Request, event string, res result) {
	attrs := []slog.Attr{
		slog.String("delivery", headerValue(r.Header.Get("X-GitHub-Delivery"))),
		slog.String("event", headerValue(event)),
		slog.String("remote", r.RemoteAddr),
		slog.Int("status", res.status),
		slog.String("outcome", res.outcome),
	}
	if res.reason != "" {
		attrs = append(attrs, slog.String("reason", res.reason))
	}
	if j := res.job; j != nil {
		attrs = append(attrs, slog.String("kind", string(j.Kind)), slog.String("ref", j.Ref), slog.String("commit", j.Commit))
		if j.PullRequest != 0 {
			attrs = append(attrs, slog.Int("pull_request", j.PullRequest))
		}
	}
	level, msg := slog.LevelInfo, "delivery "+res.outcome
	switch res.outcome {
	case outcomeDuplicate:
		msg = "duplicate delivery"
	case outcomeIgnored:
		attrs = append(attrs, slog.String("detail", res.message))
		if res.reason == reasonPing {
			msg = "ping"
		}
	case outcomeBadSignature, outcomeBadRequest, outcomeTooLarge:
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("detail", res.message))
	case outcomeError:
		level, msg = slog.LevelError, "delivery not stored"
		attrs = append(attrs, slog.Any("err", res.err))
	}
	rcv.logger.LogAttrs(r.Context(), level, msg, attrs...)
}

// handle answers one delivery, in the order that gives an unsigned request the least: method, size,
// signature, and only then headers, content type and payload.
func (rcv *Receiver) handle(w http.ResponseWriter, r *http.Request) result {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return result{status: http.StatusMethodNotAllowed, outcome: outcomeBadRequest, reason: "method",
			message: fmt.Sprintf("method %s: GitHub deliveries are POST", headerValue(r.Method))}
	}
	body, res, ok := rcv.readBody(w, r)
	if !ok {
		return res
	}
	if reason, msg := rcv.verify(r.Header.Get("X-Hub-Signature-256"), body); reason != "" {
		return result{status: http.StatusUnauthorized, outcome: outcomeBadSignature, reason: reason, message: msg}
	}

	event, delivery := r.Header.Get("X-GitHub-Event"), r.Header.Get("X-GitHub-Delivery")
	if msg := headerProblem(event, delivery); msg != "" {
		return badRequest(http.StatusBadRequest, "header", msg)
	}
	payload, res, ok := formPayload(r.Header.Get("Content-Type"), body)
	if !ok {
		return res
	}
	d, err := decide(rcv.cfg, event, payload)
	if err != nil {
		return badRequest(http.StatusBadRequest, "payload", err.Error())
	}
	if d.job == nil {
		return result{status: d.status, outcome: outcomeIgnored, reason: d.reason, message: d.message}
	}

	job := *d.job
	job.Delivery = delivery
	job.Received = rcv.cfg.Now().UTC()
	ctx, cancel := context.WithTimeout(r.Context(), rcv.cfg.EnqueueTimeout)
	defer cancel()
	duplicate, err := rcv.queue.Enqueue(ctx, job)
	switch {
	case err != nil:
		return result{status: http.StatusServiceUnavailable, outcome: outcomeError, reason: "enqueue", job: &job,
			err: fmt.Errorf("enqueue delivery %s: %w", delivery, err), message: "could not store the delivery: deliver it again later"}
	case duplicate:
		return result{status: http.StatusAccepted, outcome: outcomeDuplicate, job: &job,
			message: fmt.Sprintf("duplicate delivery %s: already queued", delivery)}
	}
	return result{status: http.StatusAccepted, outcome: outcomeQueued, job: &job,
		message: fmt.Sprintf("queued %s of %s at %s", job.Kind, job.Ref, job.Commit)}
}

func badRequest(status int, reason, msg string) result {
	return result{status: status, outcome: outcomeBadRequest, reason: reason, message: msg}
}

// readBody reads at most cfg.MaxBody bytes of the body.
func (rcv *Receiver) readBody(w http.ResponseWriter, r *http.Request) ([]byte, result, bool) {
	max := rcv.cfg.MaxBody
	tooLarge := result{status: http.StatusRequestEntityTooLarge, outcome: outcomeTooLarge,
		message: fmt.Sprintf("body larger than %d bytes", max)}
	if r.ContentLength > max {
		return nil, tooLarge, false
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1) // +1: ReadFrom needs room to see EOF
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge, false
		}
		return nil, badRequest(http.StatusBadRequest, "body", fmt.Sprintf("read body: %v", err)), false
	}
	return buf.Bytes(), result{}, true
}

// verify checks X-Hub-Signature-256 against the body. It returns the reason label and a message
// when the signature is missing or wrong; neither says anything about the expected value.
func (rcv *Receiver) verify(header string, body []byte) (reason, msg string) {
	if header == "" {
		return "missing", "no X-Hub-Signature-256: set a secret on the webhook"
	}
	h, ok := strings.CutPrefix(header, "sha256=")
	got, err := hex.DecodeString(h)
	if !ok || err != nil || len(got) != sha256.Size {
		return "malformed", "X-Hub-Signature-256 is not sha256=<64 hex digits>"
	}
	mac := hmac.New(sha256.New, rcv.cfg.Secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return "mismatch", "X-Hub-Signature-256 does not match the body and the secret"
	}
	return "", ""
}

// headerProblem checks X-GitHub-Event and X-GitHub-Delivery.
func headerProblem(event, delivery string) string {
	switch {
	case event == "":
		return "no X-GitHub-Event header"
	case !isToken(event, 64, "_"):
		return fmt.Sprintf("X-GitHub-Event %s: want a GitHub event name", events.Excerpt(event))
	case delivery == "":
		return "no X-GitHub-Delivery header"
	case !isToken(delivery, maxDeliveryLen, "-_."):
		return fmt.Sprintf("X-GitHub-Delivery %s: want at most %d letters, digits, '-', '_' or '.'", events.Excerpt(delivery), maxDeliveryLen)
	}
	return ""
}

// maxDeliveryLen bounds X-GitHub-Delivery; GitHub sends a GUID (36 bytes).
const maxDeliveryLen = 100

// isToken reports whether s is 1 to max letters, digits and bytes of extra.
func isToken(s string, max int, extra string) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}

// headerValue is a header value fit for a log line: as it is when it is a plain token, else quoted
// and cut short.
func headerValue(s string) string {
	if isToken(s, maxDeliveryLen, "-_.") {
		return s
	}
	return events.Excerpt(s)
}

// formPayload returns the JSON payload of the body: the body itself (application/json) or its
// payload field (application/x-www-form-urlencoded, the GitHub default). The signature covers
// the body as sent, so this runs after verify.
// https://docs.github.com/en/webhooks/using-webhooks/creating-webhooks#content-type
func formPayload(contentType string, body []byte) ([]byte, result, bool) {
	mt, _, err := mime.ParseMediaType(contentType)
	unsupported := badRequest(http.StatusUnsupportedMediaType, "content_type",
		fmt.Sprintf("Content-Type %s: want application/json or application/x-www-form-urlencoded", events.Excerpt(contentType)))
	if err != nil {
		return nil, unsupported, false
	}
	switch mt {
	case "application/json":
		return body, result{}, true
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, badRequest(http.StatusBadRequest, "form", fmt.Sprintf("form body: %v", err)), false
		}
		p, ok := form["payload"]
		if !ok || len(p) != 1 {
			return nil, badRequest(http.StatusBadRequest, "form", "form body: want exactly one payload field"), false
		}
		return []byte(p[0]), result{}, true
	}
	return nil, unsupported, false
}
