package webhooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/queue"
)

// The few fields of GitHub's payloads cimdeploy reads. Everything else (URLs, custom properties,
// commits) is skipped by the decoder, so a payload shape cimdeploy does not know cannot break it.
// https://docs.github.com/en/webhooks/webhook-events-and-payloads
type (
	repository struct {
		FullName string `json:"full_name"`
	}
	user struct {
		Login string `json:"login"`
	}
	pushPayload struct {
		Ref        string      `json:"ref"`
		After      string      `json:"after"`
		Deleted    bool        `json:"deleted"`
		Repository *repository `json:"repository"`
		Sender     *user       `json:"sender"`
	}
	pullRequestPayload struct {
		Action      string `json:"action"`
		Number      int    `json:"number"`
		PullRequest *struct {
			Number int `json:"number"`
			Head   struct {
				SHA  string      `json:"sha"`
				Repo *repository `json:"repo"`
			} `json:"head"`
			Base struct {
				Repo *repository `json:"repo"`
			} `json:"base"`
		} `json:"pull_request"`
		Repository *repository `json:"repository"`
		Sender     *user       `json:"sender"`
	}
	pingPayload struct {
		Zen    string `json:"zen"`
		HookID int64  `json:"hook_id"`
	}
)

// Ignore reasons: the values of the reason label, kept few.
const (
	reasonPing       = "ping"
	reasonEvent      = "event"
	reasonRepository = "repository"
	reasonTag        = "tag"
	reasonDeleted    = "deleted"
	reasonBranch     = "branch"
	reasonAction     = "action"
)

// maxRefLen bounds a pushed ref: git itself has no limit, but no file system takes a longer name.
const maxRefLen = 255

// zeroCommit is the commit id GitHub gives as after when a ref is deleted (and as before when created).
const zeroCommit = "0000000000000000000000000000000000000000"

// decision is what a verified delivery asks for: a job to queue, or nothing, with the reason.
type decision struct {
	job     *queue.Job // nil: nothing to queue
	status  int        // the answer when nothing is queued
	reason  string     // label value when nothing is queued
	message string     // for the log and the response body
}

func ignore(reason, format string, args ...any) decision {
	return decision{status: http.StatusAccepted, reason: reason, message: "ignored: " + fmt.Sprintf(format, args...)}
}

// payloadError is a delivery whose payload cimdeploy cannot accept: bad JSON or a bad value.
type payloadError struct{ msg string }

func (e *payloadError) Error() string { return e.msg }

func badPayload(format string, args ...any) error {
	return &payloadError{msg: fmt.Sprintf(format, args...)}
}

// decide reads a verified delivery's payload and says what it asks for. The job it returns lacks
// Delivery and Received, which belong to the request. An error is a *payloadError.
func decide(cfg Config, event string, payload []byte) (decision, error) {
	switch event {
	case "ping":
		var p pingPayload
		if err := decodeJSON(event, payload, &p); err != nil {
			return decision{}, err
		}
		return decision{status: http.StatusOK, reason: reasonPing, message: "pong: " + oneLine(p.Zen, 200)}, nil
	case "push":
		return decidePush(cfg, payload)
	case "pull_request":
		return decidePullRequest(cfg, payload)
	}
	return ignore(reasonEvent, "%s events are not used (only push, pull_request and ping)", events.Excerpt(event)), nil
}

func decidePush(cfg Config, payload []byte) (decision, error) {
	var p pushPayload
	if err := decodeJSON("push", payload, &p); err != nil {
		return decision{}, err
	}
	if d, ok := otherRepository(cfg, p.Repository); ok {
		return d, nil
	}
	if p.Repository == nil {
		return decision{}, badPayload("push payload: no repository.full_name")
	}
	if err := validatePushRef(p.Ref); err != nil {
		return decision{}, err
	}
	if !isCommit(p.After) {
		return decision{}, badPayload("push payload: after %s: want a commit id, 40 lowercase hex digits", events.Excerpt(p.After))
	}
	branch, isBranch := strings.CutPrefix(p.Ref, "refs/heads/")
	switch {
	case !isBranch:
		return ignore(reasonTag, "%s is not a branch: only pushes to refs/heads/%s deploy", p.Ref, cfg.DeployBranch), nil
	case p.Deleted || p.After == zeroCommit:
		return ignore(reasonDeleted, "branch %s was deleted", p.Ref), nil
	case branch != cfg.DeployBranch:
		return ignore(reasonBranch, "push to %s: only pushes to refs/heads/%s deploy", p.Ref, cfg.DeployBranch), nil
	}
	return decision{job: &queue.Job{
		Event:      "push",
		Kind:       pipeline.KindDeploy,
		Ref:        p.Ref,
		Commit:     p.After,
		Branch:     branch,
		Repository: cfg.Repository,
		Sender:     login(p.Sender),
	}}, nil
}

func decidePullRequest(cfg Config, payload []byte) (decision, error) {
	var p pullRequestPayload
	if err := decodeJSON("pull_request", payload, &p); err != nil {
		return decision{}, err
	}
	if d, ok := otherRepository(cfg, p.Repository); ok {
		return d, nil
	}
	if p.Repository == nil {
		return decision{}, badPayload("pull_request payload: no repository.full_name")
	}
	switch p.Action {
	case "opened", "synchronize", "reopened":
	default:
		return ignore(reasonAction, "pull_request action %s: only opened, synchronize and reopened are validated", events.Excerpt(p.Action)), nil
	}
	pr := p.PullRequest
	if pr == nil {
		return decision{}, badPayload("pull_request payload: no pull_request object")
	}
	n := p.Number
	if n == 0 {
		n = pr.Number
	}
	switch {
	case n <= 0:
		return decision{}, badPayload("pull_request payload: number %d: want a positive number", n)
	case pr.Number != 0 && pr.Number != n:
		return decision{}, badPayload("pull_request payload: number %d but pull_request.number %d", p.Number, pr.Number)
	case !isCommit(pr.Head.SHA):
		return decision{}, badPayload("pull_request payload: pull_request.head.sha %s: want a commit id, 40 lowercase hex digits", events.Excerpt(pr.Head.SHA))
	}
	ref := fmt.Sprintf("refs/pull/%d/head", n)
	if err := checkout.ValidateRev(ref); err != nil { // cannot fail for a positive number; checked all the same
		return decision{}, badPayload("pull_request payload: %v", err)
	}
	fork := pr.Head.Repo == nil || pr.Base.Repo == nil || !strings.EqualFold(pr.Head.Repo.FullName, pr.Base.Repo.FullName)
	return decision{job: &queue.Job{
		Event:       "pull_request",
		Kind:        pipeline.KindValidate,
		Ref:         ref,
		Commit:      pr.Head.SHA,
		PullRequest: n,
		Repository:  cfg.Repository,
		Fork:        fork,
		Sender:      login(p.Sender),
	}}, nil
}

// otherRepository ignores a delivery for a repository other than cfg.Repository.
func otherRepository(cfg Config, r *repository) (decision, bool) {
	if r == nil || strings.EqualFold(r.FullName, cfg.Repository) {
		return decision{}, false
	}
	return ignore(reasonRepository, "repository %s is not %s", events.Excerpt(r.FullName), cfg.Repository), true
}

// validatePushRef accepts refs/heads/<name> and refs/tags/<name> that pass git check-ref-format.
func validatePushRef(ref string) error {
	switch {
	case len(ref) > maxRefLen:
		return badPayload("push payload: ref %s: longer than %d bytes", events.Excerpt(ref), maxRefLen)
	case !strings.HasPrefix(ref, "refs/heads/") && !strings.HasPrefix(ref, "refs/tags/"):
		return badPayload("push payload: ref %s: want refs/heads/<branch> or refs/tags/<tag>", events.Excerpt(ref))
	}
	if err := checkout.ValidateRev(ref); err != nil {
		var re *checkout.RevError
		if errors.As(err, &re) {
			return badPayload("push payload: ref %s: %s", events.Excerpt(ref), re.Reason)
		}
		return badPayload("push payload: ref %s: %v", events.Excerpt(ref), err)
	}
	return nil
}

// isCommit reports whether s is a SHA-1 commit id as GitHub writes it: 40 lowercase hex digits.
func isCommit(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// login is the sender's login when it looks like one (letters, digits, '-', '_', '.', and a "[bot]"
// suffix, at most 64 bytes), else "": the sender is only shown, never worth refusing a delivery for.
func login(u *user) string {
	if u == nil {
		return ""
	}
	name := strings.TrimSuffix(u.Login, "[bot]")
	if name == "" || len(u.Login) > 64 {
		return ""
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.", c) >= 0) {
			return ""
		}
	}
	return u.Login
}

// oneLine is s without control characters, cut to at most max bytes (on a character boundary).
func oneLine(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	for len(s) > max {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// decodeJSON decodes a payload into v and names the field or the offset of a problem.
func decodeJSON(event string, data []byte, v any) error {
	err := json.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax):
		return badPayload("%s payload: invalid JSON at byte offset %d: %v", event, syntax.Offset, syntax)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(the payload itself)"
		}
		return badPayload("%s payload: field %s: want %s, got JSON %s (byte offset %d)", event, field, typ.Type, typ.Value, typ.Offset)
	}
	return badPayload("%s payload: %v", event, err)
}
