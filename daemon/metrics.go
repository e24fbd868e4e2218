package daemon

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// runMetrics turns the events of runs into Prometheus metrics: runs by kind and result, stage and
// node durations. It is a pipeline.Reporter.
type runMetrics struct {
	runs   *prometheus.CounterVec
	stages *prometheus.HistogramVec
	steps  *prometheus.HistogramVec
	active *prometheus.GaugeVec

	mu    sync.Mutex
	kinds map[string]pipeline.Kind // run id -> kind, while the run goes on
}

// durationBuckets span a cached stage (milliseconds) to a slow build or rollout (an hour).
var durationBuckets = []float64{0.05, 0.25, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600}

func newRunMetrics(reg prometheus.Registerer) *runMetrics {
	m := &runMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cimdeploy_runs_total", Help: "Finished runs by kind (deploy, validate) and result (success, failed, cancelled).",
		}, []string{"kind", "result"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cimdeploy_stage_duration_seconds", Help: "How long the stages of runs took, by stage and result.",
			Buckets: durationBuckets,
		}, []string{"stage", "result"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cimdeploy_node_duration_seconds", Help: "How long a node's part of a stage took (build, publish, rollout), by stage, node and result.",
			Buckets: durationBuckets,
		}, []string{"stage", "node", "result"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cimdeploy_runs_active", Help: "Runs going on now, by kind.",
		}, []string{"kind"}),
		kinds: map[string]pipeline.Kind{},
	}
	if reg != nil {
		reg.MustRegister(m.runs, m.stages, m.steps, m.active)
	}
	return m
}

// Report implements pipeline.Reporter.
func (m *runMetrics) Report(_ context.Context, ev pipeline.Event) error {
	switch ev.Type {
	case pipeline.RunStarted:
		var d pipeline.RunData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return err
		}
		m.mu.Lock()
		m.kinds[ev.AggregateID] = d.Run.Kind
		m.mu.Unlock()
		m.active.WithLabelValues(string(d.Run.Kind)).Inc()
	case pipeline.StageFinished:
		var s pipeline.StageResult
		if err := json.Unmarshal(ev.Data, &s); err != nil {
			return err
		}
		if s.Status != pipeline.StatusSkipped {
			m.stages.WithLabelValues(s.Name, string(s.Status)).Observe(s.Duration.Seconds())
		}
	case pipeline.StepFinished:
		var d pipeline.StepData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return err
		}
		if d.Step.Node != "" && d.Step.Status != pipeline.StatusSkipped {
			m.steps.WithLabelValues(d.Stage, d.Step.Node, string(d.Step.Status)).Observe(d.Step.Duration.Seconds())
		}
	case pipeline.RunFinished:
		var r pipeline.Result
		if err := json.Unmarshal(ev.Data, &r); err != nil {
			return err
		}
		m.mu.Lock()
		kind, ok := m.kinds[ev.AggregateID]
		delete(m.kinds, ev.AggregateID)
		m.mu.Unlock()
		if !ok {
			kind = r.Run.Kind
		} else {
			m.active.WithLabelValues(string(kind)).Dec()
		}
		m.runs.WithLabelValues(string(kind), string(r.Status)).Inc()
	}
	return nil
}
