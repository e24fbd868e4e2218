package webhookbench

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/go-playground/webhooks/v6/github"
)

// Bare is the fastest a receiver can answer: it reads at most maxBody bytes, checks the signature and
// answers 202, storing nothing. It is the bound cimdeploy's Receiver is measured against.
func Bare(secret []byte, maxBody int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			http.Error(w, "read body", http.StatusRequestEntityTooLarge)
			return
		}
		got, err := hex.DecodeString(strings.TrimPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256="))
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
}

// Library is a receiver built on github.com/go-playground/webhooks/v6: its Parse verifies the
// signature and decodes the whole payload of a push, pull_request or ping; then it answers 202,
// storing nothing.
func Library(secret string) (http.Handler, error) {
	hook, err := github.New(github.Options.Secret(secret))
	if err != nil {
		return nil, fmt.Errorf("go-playground github webhook: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := hook.Parse(r, github.PushEvent, github.PullRequestEvent, github.PingEvent)
		switch {
		case errors.Is(err, github.ErrHMACVerificationFailed), errors.Is(err, github.ErrMissingHubSignatureHeader):
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}), nil
}
