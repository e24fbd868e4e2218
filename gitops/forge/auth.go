package forge

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v60/github"
)

// maxSecretFile bounds a token or key file read.
const maxSecretFile = 64 << 10

// readSecretFile reads a small secret file; its errors name the file, never its content.
func readSecretFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("github %s file: %w", what, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("github %s file %s: %w", what, path, err)
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("github %s file %s: larger than %d bytes", what, path, maxSecretFile)
	}
	return b, nil
}

// secrets remembers every credential in use so that no log line or error carries one.
type secrets struct {
	mu   sync.Mutex
	vals []string
}

func (s *secrets) add(v string) {
	if len(v) < 4 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vals = append(s.vals, v)
	if len(s.vals) > 64 { // old installation tokens have expired; keep a bounded history
		s.vals = s.vals[len(s.vals)-64:]
	}
}

// scrub replaces every known credential in msg.
func (s *secrets) scrub(msg string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.vals {
		msg = strings.ReplaceAll(msg, v, "[REDACTED]")
	}
	return msg
}

// tokenSource gives the token of the next request.
type tokenSource interface {
	token(ctx context.Context) (string, error)
	// invalidate drops a cached token that GitHub refused.
	invalidate()
}

type staticToken string

func (t staticToken) token(context.Context) (string, error) { return string(t), nil }
func (staticToken) invalidate()                             {}

// appTokens creates and caches installation tokens of a GitHub App
// (docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app-installation).
type appTokens struct {
	appID          int64
	installationID int64
	key            *rsa.PrivateKey
	client         *github.Client // authenticated with the app's JWT
	secrets        *secrets
	now            func() time.Time
	// refreshBefore is how long before expires_at a token is replaced.
	refreshBefore time.Duration
	// observe counts the call (metrics).
	observe func(endpoint string, resp *github.Response, err error)

	mu      sync.Mutex
	current string
	expires time.Time
}

func parseRSAKey(pemBytes []byte, path string) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("github app private key file %s: no PEM block", path)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("github app private key file %s: not a PKCS#1 or PKCS#8 RSA key", path)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("github app private key file %s: a %T, want an RSA key", path, k)
	}
	return rk, nil
}

// jwt signs the app's JSON Web Token: RS256, iat 60 seconds in the past against clock drift, exp nine
// minutes ahead (GitHub allows at most ten), iss the app id
// (docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app).
func (a *appTokens) jwt() (string, error) {
	now := a.now()
	enc := func(v any) (string, error) {
		b, err := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b), err
	}
	h, err := enc(map[string]string{"alg": "RS256", "typ": "JWT"})
	if err != nil {
		return "", err
	}
	c, err := enc(map[string]any{"iat": now.Add(-60 * time.Second).Unix(), "exp": now.Add(9 * time.Minute).Unix(), "iss": strconv.FormatInt(a.appID, 10)})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(h + "." + c))
	sig, err := rsa.SignPKCS1v15(rand.Reader, a.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("github app %d: sign JWT: %w", a.appID, err)
	}
	tok := h + "." + c + "." + base64.RawURLEncoding.EncodeToString(sig)
	a.secrets.add(tok)
	return tok, nil
}

func (a *appTokens) token(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current != "" && a.now().Before(a.expires.Add(-a.refreshBefore)) {
		return a.current, nil
	}
	it, resp, err := a.client.Apps.CreateInstallationToken(ctx, a.installationID, &github.InstallationTokenOptions{})
	if a.observe != nil {
		a.observe("create_installation_token", resp, err)
	}
	if err != nil {
		return "", fmt.Errorf("github app %d installation %d: create access token: %w", a.appID, a.installationID, err)
	}
	if it.GetToken() == "" {
		return "", fmt.Errorf("github app %d installation %d: access token response without a token", a.appID, a.installationID)
	}
	a.secrets.add(it.GetToken())
	a.current = it.GetToken()
	a.expires = it.GetExpiresAt().Time
	if a.expires.IsZero() {
		a.expires = a.now().Add(time.Hour) // documented lifetime
	}
	return a.current, nil
}

func (a *appTokens) invalidate() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.current = ""
}

// jwtTransport authenticates the app's own calls with a fresh JWT.
type jwtTransport struct {
	app  *appTokens
	base http.RoundTripper
}

func (t jwtTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.app.jwt()
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return t.base.RoundTrip(r)
}

// authTransport puts the source's token on every request. The token travels only in the header.
type authTransport struct {
	src  tokenSource
	base http.RoundTripper
}

func (t authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.src.token(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return t.base.RoundTrip(r)
}

// errNoToken is returned for an empty token file.
var errNoToken = errors.New("is empty")

func loadToken(path string) (string, error) {
	b, err := readSecretFile(path, "token")
	if err != nil {
		return "", err
	}
	tok := string(bytes.TrimSpace(b))
	if tok == "" {
		return "", fmt.Errorf("github token file %s %w", path, errNoToken)
	}
	if strings.ContainsAny(tok, "\r\n\t ") {
		return "", fmt.Errorf("github token file %s: more than one word", path)
	}
	return tok, nil
}
