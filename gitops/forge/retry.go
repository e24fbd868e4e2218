package forge

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"
)

// resetMargin is added to a wait until X-RateLimit-Reset, a whole second.
const resetMargin = 250 * time.Millisecond

// retryDelay says whether a failed call is worth another try and after how long, following
// https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#handle-rate-limit-errors-appropriately:
// a retry-after header says how many seconds to wait; x-ratelimit-remaining 0 means wait until
// x-ratelimit-reset; a secondary rate limit without either means wait at least a minute, backing off
// exponentially. Server errors and network failures back off; other client errors are final, except
// a first 401 of an installation token, which is then replaced.
//
// go-github v60 returns *github.RateLimitError only for a 403 with X-RateLimit-Remaining: 0 and
// *github.AbuseRateLimitError only for a 403 whose documentation_url ends in "secondary-rate-limits";
// a 429 is a plain *github.ErrorResponse (github.CheckResponse), so the headers are read here too.
func (r *Reporter) retryDelay(err error, attempt int) (time.Duration, bool) {
	backoff := r.backoff(attempt)
	var rle *github.RateLimitError
	if errors.As(err, &rle) {
		if !rle.Rate.Reset.Time.IsZero() {
			return max(time.Until(rle.Rate.Reset.Time)+resetMargin, resetMargin), true
		}
		return max(r.cfg.SecondaryWait, backoff), true
	}
	var are *github.AbuseRateLimitError
	if errors.As(err, &are) {
		if are.RetryAfter != nil && *are.RetryAfter > 0 {
			return *are.RetryAfter, true
		}
		return max(r.cfg.SecondaryWait, backoff), true
	}
	var ae *github.AcceptedError
	if errors.As(err, &ae) {
		return backoff, true
	}
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		h := er.Response.Header
		if d, ok := parseRetryAfter(h.Get("Retry-After"), time.Now()); ok {
			return d, true
		}
		if h.Get("X-RateLimit-Remaining") == "0" {
			if sec, perr := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); perr == nil {
				return max(time.Until(time.Unix(sec, 0))+resetMargin, resetMargin), true
			}
		}
		code := er.Response.StatusCode
		switch {
		case code == http.StatusTooManyRequests,
			code == http.StatusForbidden && strings.Contains(strings.ToLower(er.Message), "secondary rate limit"):
			return max(r.cfg.SecondaryWait, backoff), true
		case code == http.StatusUnauthorized && r.app && attempt == 1:
			r.tokens.invalidate()
			return backoff, true
		case code >= 500 || code == http.StatusRequestTimeout:
			return backoff, true
		default:
			return 0, false
		}
	}
	if r.base.Err() != nil && errors.Is(err, context.Canceled) {
		return 0, false
	}
	return backoff, true // network failure, request timeout
}

// backoff is the exponential back-off before try attempt+1, between RetryMin and RetryMax, with
// jitter in its upper half.
func (r *Reporter) backoff(attempt int) time.Duration {
	d := r.cfg.RetryMin
	for i := 1; i < attempt && d < r.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.RetryMax)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// parseRetryAfter reads Retry-After: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
