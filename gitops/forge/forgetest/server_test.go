package forgetest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

const token = "ghp_emulatortesttoken"

func TestServerRejectsWhatGitHubRejects(t *testing.T) {
	t.Parallel()
	srv := NewServer(t, WithToken(token), ExpectRejections())
	sha := "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		name   string
		method string
		path   string
		token  string
		body   any
		status int
		field  string
	}{
		{name: "valid status", method: "POST", path: "/repos/o/r/statuses/" + sha, token: token, body: map[string]any{"state": "success", "context": "ci"}, status: 201},
		{name: "state not in the enum", method: "POST", path: "/repos/o/r/statuses/" + sha, token: token, body: map[string]any{"state": "ok"}, status: 422, field: "state"},
		{name: "state missing", method: "POST", path: "/repos/o/r/statuses/" + sha, token: token, body: map[string]any{"context": "ci"}, status: 422, field: "state"},
		{name: "state of the wrong type", method: "POST", path: "/repos/o/r/statuses/" + sha, token: token, body: map[string]any{"state": 1}, status: 422, field: "state"},
		{name: "description over 140 characters", method: "POST", path: "/repos/o/r/statuses/" + sha, token: token, body: map[string]any{"state": "error", "description": strings.Repeat("é", 141)}, status: 422, field: "description"},
		{name: "description of 140 characters", method: "POST", path: "/repos/o/r/statuses/" + sha, token: token, body: map[string]any{"state": "error", "description": strings.Repeat("é", 140)}, status: 201},
		{name: "deployment without ref", method: "POST", path: "/repos/o/r/deployments", token: token, body: map[string]any{"environment": "production"}, status: 422, field: "ref"},
		{name: "required_contexts not an array", method: "POST", path: "/repos/o/r/deployments", token: token, body: map[string]any{"ref": sha, "required_contexts": "ci"}, status: 422, field: "required_contexts"},
		{name: "deployment status state not in the enum", method: "POST", path: "/repos/o/r/deployments/1/statuses", token: token, body: map[string]any{"state": "done"}, status: 422, field: "state"},
		{name: "deployment status in_progress", method: "POST", path: "/repos/o/r/deployments/1/statuses", token: token, body: map[string]any{"state": "in_progress"}, status: 201},
		{name: "no authentication", method: "POST", path: "/repos/o/r/statuses/" + sha, body: map[string]any{"state": "success"}, status: 401},
		{name: "wrong token", method: "POST", path: "/repos/o/r/statuses/" + sha, token: "ghp_wrong", body: map[string]any{"state": "success"}, status: 401},
		{name: "undocumented path", method: "POST", path: "/repos/o/r/status/" + sha, token: token, body: map[string]any{"state": "success"}, status: 404},
		{name: "undocumented method", method: "PUT", path: "/repos/o/r/deployments", token: token, body: map[string]any{"ref": sha}, status: 404},
		{name: "check run with a personal token", method: "POST", path: "/repos/o/r/check-runs", token: token, body: map[string]any{"name": "c", "head_sha": sha}, status: 403},
		{name: "no body", method: "POST", path: "/repos/o/r/deployments", token: token, status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := srv.Do(t.Context(), tc.method, tc.path, tc.token, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Message string `json:"message"`
				Errors  []struct {
					Field string `json:"field"`
				} `json:"errors"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body.Message, tc.status)
			}
			if tc.field != "" && (len(body.Errors) == 0 || body.Errors[0].Field != tc.field || body.Message != "Validation Failed") {
				t.Errorf("422 body = %+v, want Validation Failed on %s", body, tc.field)
			}
		})
	}
	for _, r := range srv.Requests() {
		if r.Status/100 != 2 && r.Status != 403 && len(r.Problems) == 0 {
			t.Errorf("%s %s refused with %d without a recorded reason", r.Method, r.Path, r.Status)
		}
	}
}

func jwt(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestServerAppTokensAndCheckRuns(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(t, WithApp(12, 34, &key.PublicKey, time.Hour), ExpectRejections())
	now := time.Now()
	good := map[string]any{"iat": now.Add(-time.Minute).Unix(), "exp": now.Add(9 * time.Minute).Unix(), "iss": "12"}
	for _, tc := range []struct {
		name   string
		jwt    string
		path   string
		status int
	}{
		{name: "exp more than 10 minutes ahead", jwt: jwt(t, key, map[string]any{"iat": now.Unix(), "exp": now.Add(20 * time.Minute).Unix(), "iss": 12}), path: "/app/installations/34/access_tokens", status: 401},
		{name: "signed by another key", jwt: jwt(t, other, good), path: "/app/installations/34/access_tokens", status: 401},
		{name: "another app", jwt: jwt(t, key, map[string]any{"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "iss": 13}), path: "/app/installations/34/access_tokens", status: 401},
		{name: "unknown installation", jwt: jwt(t, key, good), path: "/app/installations/35/access_tokens", status: 404},
		{name: "valid", jwt: jwt(t, key, good), path: "/app/installations/34/access_tokens", status: 201},
	} {
		resp, err := srv.Do(t.Context(), "POST", tc.path, tc.jwt, map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		var tok struct {
			Token     string `json:"token"`
			ExpiresAt string `json:"expires_at"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
		if tc.status != 201 {
			continue
		}
		if tok.Token == "" || tok.ExpiresAt == "" {
			t.Fatalf("installation token response %+v lacks token or expires_at", tok)
		}
		sha := "0123456789abcdef0123456789abcdef01234567"
		many := make([]any, 51)
		for i := range many {
			many[i] = map[string]any{"path": "a", "start_line": 1, "end_line": 1, "annotation_level": "failure", "message": "m"}
		}
		for _, c := range []struct {
			name   string
			method string
			path   string
			body   map[string]any
			status int
		}{
			{name: "create", method: "POST", path: "/repos/o/r/check-runs", body: map[string]any{"name": "c", "head_sha": sha, "status": "in_progress"}, status: 201},
			{name: "completed without conclusion", method: "POST", path: "/repos/o/r/check-runs", body: map[string]any{"name": "c", "head_sha": sha, "status": "completed"}, status: 422},
			{name: "51 annotations", method: "PATCH", path: "/repos/o/r/check-runs/5", body: map[string]any{"conclusion": "failure", "output": map[string]any{"title": "t", "summary": "s", "annotations": many}}, status: 422},
			{name: "50 annotations", method: "PATCH", path: "/repos/o/r/check-runs/5", body: map[string]any{"conclusion": "failure", "output": map[string]any{"title": "t", "summary": "s", "annotations": many[:50]}}, status: 200},
			{name: "annotation without line", method: "PATCH", path: "/repos/o/r/check-runs/5", body: map[string]any{"output": map[string]any{"summary": "s", "annotations": []any{map[string]any{"path": "a", "annotation_level": "failure", "message": "m"}}}}, status: 422},
			{name: "bad conclusion", method: "PATCH", path: "/repos/o/r/check-runs/5", body: map[string]any{"conclusion": "broken"}, status: 422},
		} {
			resp, err := srv.Do(t.Context(), c.method, c.path, tok.Token, c.body)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Errorf("check run %s: status %d, want %d", c.name, resp.StatusCode, c.status)
			}
		}
	}
}

func TestServerFaults(t *testing.T) {
	t.Parallel()
	srv := NewServer(t, WithToken(token))
	post := func() *http.Response {
		resp, err := srv.Do(t.Context(), "POST", "/repos/o/r/deployments", token, map[string]any{"ref": "main"})
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusForbidden && resp.Header.Get("Retry-After") != "" && body["message"] != SecondaryMessage {
			t.Errorf("secondary rate limit message = %v", body["message"])
		}
		return resp
	}
	srv.FailNext(1)
	srv.SecondaryRateLimitNext(1, 2*time.Second)
	srv.TooManyRequestsNext(1, time.Second)
	for _, want := range []struct {
		status     int
		retryAfter string
	}{{500, ""}, {403, "2"}, {429, "1"}, {201, ""}} {
		resp := post()
		if resp.StatusCode != want.status || resp.Header.Get("Retry-After") != want.retryAfter {
			t.Errorf("status %d Retry-After %q, want %d %q", resp.StatusCode, resp.Header.Get("Retry-After"), want.status, want.retryAfter)
		}
	}
	reset := srv.ExhaustPrimary(time.Now().Add(time.Hour))
	resp := post()
	if resp.StatusCode != 403 || resp.Header.Get("X-RateLimit-Remaining") != "0" || resp.Header.Get("X-RateLimit-Reset") != itoa(reset.Unix()) {
		t.Errorf("exhausted primary limit: %d remaining %q reset %q", resp.StatusCode, resp.Header.Get("X-RateLimit-Remaining"), resp.Header.Get("X-RateLimit-Reset"))
	}
	if n := len(srv.Requests()); n != 5 {
		t.Errorf("recorded %d requests, want 5", n)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
