package forge

import (
	"errors"
	"strconv"
	"strings"

	"github.com/google/go-github/v60/github"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	calls     *prometheus.CounterVec
	remaining prometheus.Gauge
	dropped   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cimdeploy_github_api_calls_total",
			Help: "GitHub REST API calls by endpoint and HTTP status code (error: no answer; not_sent: refused by the client while a rate limit lasts).",
		}, []string{"endpoint", "code"}),
		remaining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cimdeploy_github_rate_limit_remaining",
			Help: "X-RateLimit-Remaining of the last GitHub answer.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cimdeploy_github_reports_dropped_total",
			Help: "GitHub calls dropped because the report queue was full.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.remaining, m.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// observe counts one call.
func (r *Reporter) observe(endpoint string, resp *github.Response, err error) {
	code := "error"
	if resp != nil && resp.Response != nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	var rle *github.RateLimitError
	var are *github.AbuseRateLimitError
	switch {
	case errors.As(err, &rle):
		r.metrics.remaining.Set(float64(rle.Rate.Remaining))
		if strings.Contains(rle.Message, "not making remote request") {
			code = "not_sent"
		}
	case errors.As(err, &are) && strings.Contains(are.Message, "not making remote request"):
		code = "not_sent"
	case resp != nil && resp.Rate.Limit > 0:
		r.metrics.remaining.Set(float64(resp.Rate.Remaining))
	}
	r.metrics.calls.WithLabelValues(endpoint, code).Inc()
}
