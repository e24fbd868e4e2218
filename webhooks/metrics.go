package webhooks

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes: the values of the outcome label.
const (
	outcomeQueued       = "queued"
	outcomeDuplicate    = "duplicate"
	outcomeIgnored      = "ignored"
	outcomeBadSignature = "bad_signature"
	outcomeBadRequest   = "bad_request"
	outcomeTooLarge     = "too_large"
	outcomeError        = "error"
)

// metrics counts every delivery by event, outcome and reason, and times its handling.
type metrics struct {
	deliveries *prometheus.CounterVec
	seconds    *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cimdeploy_webhook_deliveries_total",
			Help: "GitHub webhook deliveries received, by event (push, pull_request, ping, create, delete, other, none), outcome (queued, duplicate, ignored, bad_signature, bad_request, too_large, error) and reason (why it was ignored or refused; empty otherwise).",
		}, []string{"event", "outcome", "reason"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cimdeploy_webhook_handling_seconds",
			Help:    "Time from a delivery's arrival to its answer, including storing the job, by outcome.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outcome"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register webhook metrics: %w", err)
		}
	}
	return m, nil
}

// eventLabel maps X-GitHub-Event, which anyone can send, to a few label values.
func eventLabel(event string) string {
	switch event {
	case "push", "pull_request", "ping", "create", "delete":
		return event
	case "":
		return "none"
	}
	return "other"
}
