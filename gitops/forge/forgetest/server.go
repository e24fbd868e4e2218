// Package forgetest is a strict stand-in for the GitHub REST API, for tests: an httptest server that
// records every request in order and checks each against GitHub's published OpenAPI description
// (testdata/openapi-fragments.json, transcribed from github/rest-api-description,
// descriptions/api.github.com/api.github.com.2022-11-28.json). A request GitHub would refuse is
// answered as GitHub answers it (401, 404, 422 Validation Failed) and, unless the test said it expects
// that, fails the test. Knobs make it slow, fail with 500, or answer with the primary and secondary
// rate limits as https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
// documents them.
package forgetest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

//go:embed testdata/openapi-fragments.json
var fragmentsJSON []byte

// APIVersion is the REST API version the fragments describe; a request naming another is refused.
const APIVersion = "2022-11-28"

// Documentation URLs GitHub puts in its error bodies. go-github v60 recognises a secondary rate limit
// by the suffix "secondary-rate-limits" of documentation_url (github.CheckResponse).
const (
	docsPrimary   = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-primary-rate-limits"
	docsSecondary = "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
	docsREST      = "https://docs.github.com/rest"
	// SecondaryMessage is the message of a secondary rate limit response, as GitHub sends it.
	SecondaryMessage = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)

// Request is one request the server received, and how it answered.
type Request struct {
	Method string
	// Path is the URL path; OperationID names the OpenAPI operation it matched ("" when none).
	Path        string
	OperationID string
	Params      map[string]string
	Header      http.Header
	// Body is the decoded JSON body (nil when none).
	Body map[string]any
	At   time.Time
	// Status is the HTTP status answered; Problems says why a request GitHub would refuse was refused
	// (empty for an accepted request and for a fault the test asked for).
	Status   int
	Problems []string
	// Response is the JSON object answered (nil when the answer was not an object).
	Response map[string]any
}

// Server is the emulator. Its methods are safe for concurrent use.
type Server struct {
	*httptest.Server

	t   testing.TB
	ops []operation

	mu             sync.Mutex
	requests       []Request
	tokens         map[string]bool
	installTokens  map[string]time.Time
	app            *appAuth
	latency        time.Duration
	faults         []fault
	primaryUntil   time.Time
	expectRejected bool
	hang           chan struct{}
	nextID         int64
	calls          int
	start          time.Time
	now            func() time.Time
	pending        atomic.Int64
}

type appAuth struct {
	id             int64
	installationID int64
	key            *rsa.PublicKey
	tokenTTL       time.Duration
}

type fault struct {
	status     int
	retryAfter time.Duration
}

// Option configures a Server.
type Option func(*Server)

// WithToken accepts tok as a personal access token or an installation token that does not expire.
func WithToken(tok string) Option {
	return func(s *Server) { s.tokens[tok] = true }
}

// WithApp registers a GitHub App: JWTs signed by the private half of key with iss appID may create
// installation tokens for installationID, valid for ttl (GitHub: one hour).
func WithApp(appID, installationID int64, key *rsa.PublicKey, ttl time.Duration) Option {
	return func(s *Server) {
		s.app = &appAuth{id: appID, installationID: installationID, key: key, tokenTTL: ttl}
	}
}

// WithClock sets the clock that JWTs and installation tokens are checked against (default time.Now),
// for a test that moves time forward to see tokens renewed.
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// WithLatency delays every answer by d (or until the request is cancelled).
func WithLatency(d time.Duration) Option {
	return func(s *Server) { s.latency = d }
}

// ExpectRejections says the test sends requests GitHub would refuse on purpose: they are still
// refused, but do not fail the test.
func ExpectRejections() Option {
	return func(s *Server) { s.expectRejected = true }
}

// NewServer starts the emulator; it is closed when the test ends. Unless ExpectRejections is given,
// the test fails if any request was refused for a reason other than a fault the test asked for.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	ops, err := loadOperations(fragmentsJSON)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, ops: ops, tokens: map[string]bool{}, installTokens: map[string]time.Time{}, nextID: 1000, start: time.Now(), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		s.release()
		s.Server.Close()
		if s.expectRejected {
			return
		}
		for _, r := range s.Requests() {
			if len(r.Problems) > 0 {
				t.Errorf("forgetest: %s %s refused (%d): %s", r.Method, r.Path, r.Status, strings.Join(r.Problems, "; "))
			}
		}
	})
	return s
}

// Requests returns every request received so far, in order of arrival.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Accepted returns the requests answered with a 2xx status, in order, optionally only those of the
// given operation ids.
func (s *Server) Accepted(operationIDs ...string) []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Status/100 != 2 {
			continue
		}
		if len(operationIDs) > 0 && !contains(operationIDs, r.OperationID) {
			continue
		}
		out = append(out, r)
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// FailNext answers the next n requests with 500.
func (s *Server) FailNext(n int) { s.addFaults(n, fault{status: http.StatusInternalServerError}) }

// SecondaryRateLimitNext answers the next n requests as a secondary rate limit does: 403 with
// Retry-After and the documented message
// (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits).
func (s *Server) SecondaryRateLimitNext(n int, retryAfter time.Duration) {
	s.addFaults(n, fault{status: http.StatusForbidden, retryAfter: retryAfter})
}

// TooManyRequestsNext answers the next n requests with 429 and Retry-After, which GitHub may send for
// a secondary rate limit too (same page: "403 or 429").
func (s *Server) TooManyRequestsNext(n int, retryAfter time.Duration) {
	s.addFaults(n, fault{status: http.StatusTooManyRequests, retryAfter: retryAfter})
}

func (s *Server) addFaults(n int, f fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, f)
	}
}

// ExhaustPrimary exhausts the primary rate limit until the whole second after until: requests are
// answered with 403, X-RateLimit-Remaining: 0 and X-RateLimit-Reset (UTC epoch seconds), as
// https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit
// says. It returns the reset time.
func (s *Server) ExhaustPrimary(until time.Time) time.Time {
	reset := time.Unix(int64(math.Ceil(float64(until.UnixNano())/1e9)), 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.primaryUntil = reset
	return reset
}

// Hang makes the server hold every request until the returned function is called (or the request is
// cancelled); the test's cleanup releases it too.
func (s *Server) Hang() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hang == nil {
		s.hang = make(chan struct{})
	}
	return s.release
}

func (s *Server) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hang != nil {
		close(s.hang)
		s.hang = nil
	}
}

// maxBody bounds a request body; GitHub's own bound is larger, ours only needs to exceed what a
// reporter sends.
const maxBody = 1 << 20

// Pending is the number of requests received and not answered yet (held by Hang or the latency).
func (s *Server) Pending() int { return int(s.pending.Load()) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.pending.Add(1)
	defer s.pending.Add(-1)
	now := time.Now()
	rec := Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), At: now}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	s.mu.Lock()
	hang, latency := s.hang, s.latency
	s.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
		}
	}
	status, body, hdr := s.answer(r, raw, err, &rec)
	s.mu.Lock()
	s.calls++
	used := s.calls
	s.mu.Unlock()
	h := w.Header()
	// Every answer carries the primary rate limit headers (rate-limits-for-the-rest-api#checking-the-status-of-your-rate-limit).
	h.Set("X-RateLimit-Limit", "5000")
	h.Set("X-RateLimit-Remaining", strconv.Itoa(max(0, 5000-used)))
	h.Set("X-RateLimit-Used", strconv.Itoa(used))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(s.start.Add(time.Hour).Unix(), 10))
	h.Set("X-RateLimit-Resource", "core")
	for k, v := range hdr {
		h[k] = v
	}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-GitHub-Api-Version-Selected", APIVersion)
	rec.Status = status
	if obj, ok := body.(object); ok {
		rec.Response = obj
	}
	s.mu.Lock()
	s.requests = append(s.requests, rec)
	s.mu.Unlock()
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

type object = map[string]any

func message(msg, docs string) object { return object{"message": msg, "documentation_url": docs} }

// answer decides the response to one request, in GitHub's order: headers, authentication, rate
// limits, route, body.
func (s *Server) answer(r *http.Request, raw []byte, readErr error, rec *Request) (int, any, http.Header) {
	refuse := func(status int, msg string, problems ...string) (int, any, http.Header) {
		if len(problems) == 0 {
			problems = []string{msg}
		}
		rec.Problems = problems
		return status, message(msg, docsREST), nil
	}
	if readErr != nil || len(raw) > maxBody {
		return refuse(http.StatusRequestEntityTooLarge, "request body unreadable or too large")
	}
	// https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api#user-agent
	if r.UserAgent() == "" {
		return refuse(http.StatusForbidden, "Request forbidden by administrative rules. Please make sure your request has a User-Agent header")
	}
	// https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api#media-types
	if a := r.Header.Get("Accept"); a != "" && !strings.Contains(a, "application/vnd.github") && !strings.Contains(a, "application/json") && a != "*/*" {
		return refuse(http.StatusUnsupportedMediaType, "Unsupported 'Accept' header: "+a)
	}
	// https://docs.github.com/en/rest/about-the-rest-api/api-versions
	if v := r.Header.Get("X-GitHub-Api-Version"); v != "" && v != APIVersion {
		return refuse(http.StatusBadRequest, "Invalid API version provided: "+v)
	}

	op, params, pathExists := match(s.ops, r.Method, r.URL.Path)
	if op != nil {
		rec.OperationID, rec.Params = op.OperationID, params
	}
	if status, msg := s.authenticate(r, op); status != 0 {
		return refuse(status, msg)
	}
	if status, body, hdr, ok := s.rateLimited(); ok {
		return status, body, hdr
	}
	if op == nil {
		if pathExists {
			return refuse(http.StatusNotFound, "Not Found", fmt.Sprintf("method %s is not documented for %s", r.Method, r.URL.Path))
		}
		return refuse(http.StatusNotFound, "Not Found", "path "+r.URL.Path+" is not in the OpenAPI fragments")
	}
	if len(raw) > 0 && !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return refuse(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		if op.bodyNeeded {
			return refuse(http.StatusBadRequest, "Problems parsing JSON", "request body required")
		}
	} else {
		var body any
		dec := json.NewDecoder(bytes.NewReader(raw))
		if err := dec.Decode(&body); err != nil {
			return refuse(http.StatusBadRequest, "Problems parsing JSON", err.Error())
		}
		obj, ok := body.(map[string]any)
		if body == nil && !op.bodyNeeded {
			// go-github encodes nil options as null; GitHub takes it as no body.
			obj, ok = nil, true
		}
		if !ok {
			return refuse(http.StatusBadRequest, "Problems parsing JSON", "body is not a JSON object")
		}
		rec.Body = obj
		errs := validate(op.body, obj, "")
		errs = append(errs, documentedLimits(op.OperationID, obj)...)
		if len(errs) > 0 {
			problems := make([]string, len(errs))
			for i, e := range errs {
				problems[i] = e.String()
			}
			rec.Problems = problems
			// The shape of GitHub's 422 (components/responses/validation_failed).
			return http.StatusUnprocessableEntity, object{"message": "Validation Failed", "errors": errs, "documentation_url": docsREST}, nil
		}
	}
	if strings.HasPrefix(op.OperationID, "checks/") && !s.isInstallationToken(r) {
		return refuse(http.StatusForbidden, "You must authenticate via a GitHub App.")
	}
	if op.OperationID == "apps/create-installation-access-token" {
		s.mu.Lock()
		app := s.app
		s.mu.Unlock()
		if app == nil || params["installation_id"] != strconv.FormatInt(app.installationID, 10) {
			return refuse(http.StatusNotFound, "Not Found", "no such installation "+params["installation_id"])
		}
	}
	return s.respond(op, params, rec.Body)
}

// documentedLimits are limits the schemas do not express but GitHub documents and enforces.
func documentedLimits(operationID string, body map[string]any) []fieldError {
	desc, _ := body["description"].(string)
	switch operationID {
	case "repos/create-commit-status", "repos/create-deployment-status":
		// Commit status: 422 "description is too long (maximum is 140 characters)", see _notes in
		// testdata/openapi-fragments.json. Deployment status: "The maximum description length is 140
		// characters." in the schema's description text.
		if n := len([]rune(desc)); n > 140 {
			return []fieldError{{Field: "description", Code: "custom", Message: "description is too long (maximum is 140 characters)"}}
		}
	}
	return nil
}

// authenticate checks the Authorization header: a JWT for /app endpoints
// (https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app),
// a token ("token X" or "Bearer X") for the others; check runs need an installation token ("To create
// a check run, you must use a GitHub App").
func (s *Server) authenticate(r *http.Request, op *operation) (int, string) {
	h := r.Header.Get("Authorization")
	var cred string
	switch {
	case strings.HasPrefix(h, "token "):
		cred = strings.TrimPrefix(h, "token ")
	case strings.HasPrefix(h, "Bearer "):
		cred = strings.TrimPrefix(h, "Bearer ")
	default:
		return http.StatusUnauthorized, "Requires authentication"
	}
	if strings.HasPrefix(r.URL.Path, "/app/") {
		if !strings.HasPrefix(h, "Bearer ") {
			return http.StatusUnauthorized, "A JSON web token could not be decoded"
		}
		if err := s.verifyJWT(cred, s.now()); err != nil {
			return http.StatusUnauthorized, err.Error()
		}
		return 0, ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens[cred] {
		return 0, ""
	}
	exp, ok := s.installTokens[cred]
	if !ok || !s.now().Before(exp) {
		return http.StatusUnauthorized, "Bad credentials"
	}
	return 0, ""
}

func (s *Server) isInstallationToken(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	cred := h[strings.IndexByte(h, ' ')+1:]
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.installTokens[cred]
	return ok
}

// verifyJWT checks an app's JWT: RS256 signed by the app's key, iss the app id, iat not in the future,
// exp in the future and at most 10 minutes ahead.
func (s *Server) verifyJWT(tok string, now time.Time) error {
	s.mu.Lock()
	app := s.app
	s.mu.Unlock()
	if app == nil {
		return fmt.Errorf("'Issuer' claim ('iss') must be an Integer")
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return fmt.Errorf("A JSON web token could not be decoded")
	}
	var header struct {
		Alg string `json:"alg"`
	}
	var claims struct {
		Iat int64           `json:"iat"`
		Exp int64           `json:"exp"`
		Iss json.RawMessage `json:"iss"`
	}
	for i, v := range []any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, v) != nil {
			return fmt.Errorf("A JSON web token could not be decoded")
		}
	}
	if header.Alg != "RS256" {
		return fmt.Errorf("A JSON web token could not be decoded")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return fmt.Errorf("A JSON web token could not be decoded")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(app.key, crypto.SHA256, sum[:], sig) != nil {
		return fmt.Errorf("'Expiration time' claim ('exp') is too far in the future") // GitHub does not say more for a bad signature
	}
	if iss := strings.Trim(string(claims.Iss), `"`); iss != strconv.FormatInt(app.id, 10) {
		return fmt.Errorf("Integration not found")
	}
	if claims.Iat > now.Unix()+1 {
		return fmt.Errorf("'Issued at' claim ('iat') must be an Integer representing a time in the past")
	}
	if claims.Exp <= now.Unix() || claims.Exp > now.Add(10*time.Minute).Unix()+1 {
		return fmt.Errorf("'Expiration time' claim ('exp') is too far in the future")
	}
	return nil
}

// rateLimited answers a fault the test asked for, or the exhausted primary limit.
func (s *Server) rateLimited() (int, any, http.Header, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Now().Before(s.primaryUntil) {
		h := http.Header{}
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Used", "5000")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(s.primaryUntil.Unix(), 10))
		return http.StatusForbidden, message("API rate limit exceeded for installation.", docsPrimary), h, true
	}
	if len(s.faults) == 0 {
		return 0, nil, nil, false
	}
	f := s.faults[0]
	s.faults = s.faults[1:]
	h := http.Header{}
	if f.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(f.retryAfter.Seconds()))))
	}
	switch f.status {
	case http.StatusForbidden:
		return f.status, message(SecondaryMessage, docsSecondary), h, true
	case http.StatusTooManyRequests:
		return f.status, message(SecondaryMessage, docsSecondary), h, true
	default:
		return f.status, message("Server Error", ""), h, true
	}
}

func (s *Server) id() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	return s.nextID
}

// respond answers an accepted request with the documented response shape.
func (s *Server) respond(op *operation, p map[string]string, body map[string]any) (int, any, http.Header) {
	now := time.Now().UTC().Format(time.RFC3339)
	base := s.URL
	repoURL := base + "/repos/" + p["owner"] + "/" + p["repo"]
	creator := object{"login": "cimdeploy[bot]", "id": 1, "type": "Bot"}
	str := func(k, def string) string {
		if v, ok := body[k].(string); ok {
			return v
		}
		return def
	}
	id := s.id()
	switch op.OperationID {
	case "repos/create-commit-status": // components/schemas/status
		url := fmt.Sprintf("%s/statuses/%s", repoURL, p["sha"])
		return http.StatusCreated, object{"url": url, "avatar_url": "", "id": id, "node_id": fmt.Sprintf("SC_%d", id),
			"state": str("state", ""), "description": body["description"], "target_url": body["target_url"],
			"context": str("context", "default"), "created_at": now, "updated_at": now, "creator": creator}, http.Header{"Location": {url}}
	case "repos/create-deployment": // components/schemas/deployment
		url := fmt.Sprintf("%s/deployments/%d", repoURL, id)
		return http.StatusCreated, object{"url": url, "id": id, "node_id": fmt.Sprintf("DE_%d", id), "sha": str("ref", ""),
			"ref": str("ref", ""), "task": str("task", "deploy"), "payload": object{}, "original_environment": str("environment", "production"),
			"environment": str("environment", "production"), "description": body["description"], "creator": creator,
			"created_at": now, "updated_at": now, "statuses_url": url + "/statuses", "repository_url": repoURL}, nil
	case "repos/create-deployment-status": // components/schemas/deployment-status
		durl := fmt.Sprintf("%s/deployments/%s", repoURL, p["deployment_id"])
		url := fmt.Sprintf("%s/statuses/%d", durl, id)
		return http.StatusCreated, object{"url": url, "id": id, "node_id": fmt.Sprintf("DES_%d", id), "state": str("state", ""),
			"creator": creator, "description": str("description", ""), "environment": str("environment", ""),
			"target_url": str("log_url", str("target_url", "")), "log_url": str("log_url", str("target_url", "")),
			"environment_url": str("environment_url", ""), "created_at": now, "updated_at": now,
			"deployment_url": durl, "repository_url": repoURL}, http.Header{"Location": {url}}
	case "checks/create", "checks/update": // components/schemas/check-run
		crID := id
		if op.OperationID == "checks/update" {
			crID, _ = strconv.ParseInt(p["check_run_id"], 10, 64)
		}
		status := str("status", "queued")
		if _, ok := body["conclusion"]; ok {
			status = "completed"
		}
		code := http.StatusCreated
		if op.OperationID == "checks/update" {
			code = http.StatusOK
		}
		return code, object{"id": crID, "head_sha": str("head_sha", ""), "node_id": fmt.Sprintf("CR_%d", crID),
			"external_id": str("external_id", ""), "url": fmt.Sprintf("%s/check-runs/%d", repoURL, crID),
			"html_url": "", "details_url": str("details_url", ""), "status": status, "conclusion": body["conclusion"],
			"started_at": str("started_at", now), "completed_at": body["completed_at"], "output": object{},
			"name": str("name", ""), "check_suite": object{"id": 1}, "app": nil, "pull_requests": []any{}}, nil
	case "apps/create-installation-access-token": // components/schemas/installation-token
		s.mu.Lock()
		app := s.app
		s.mu.Unlock()
		tok := fmt.Sprintf("ghs_emulated%032d", id)
		exp := s.now().Add(app.tokenTTL)
		s.mu.Lock()
		s.installTokens[tok] = exp
		s.mu.Unlock()
		return http.StatusCreated, object{"token": tok, "expires_at": exp.UTC().Format(time.RFC3339),
			"permissions": object{"checks": "write", "statuses": "write", "deployments": "write"}, "repository_selection": "selected"}, nil
	}
	return http.StatusNotFound, message("Not Found", docsREST), nil
}

// Do sends one request to the server as a client would (for tests of the emulator itself): body is
// encoded as JSON, the headers carry the token, a User-Agent and the API version.
func (s *Server) Do(ctx context.Context, method, path, token string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("User-Agent", "forgetest")
	req.Header.Set("X-GitHub-Api-Version", APIVersion)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return s.Client().Do(req)
}
