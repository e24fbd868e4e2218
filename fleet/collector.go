package fleet

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Observing is what a Collector observes with: an *Observer, or ObserveFunc.
type Observing interface {
	Observe(ctx context.Context) (*Fleet, error)
}

// ObserveFunc adapts a function to Observing.
type ObserveFunc func(ctx context.Context) (*Fleet, error)

// Observe implements Observing.
func (f ObserveFunc) Observe(ctx context.Context) (*Fleet, error) { return f(ctx) }

// CollectorOptions bound a Collector's observations.
type CollectorOptions struct {
	// MaxAge is how long an observation (or its failure) answers scrapes; 0: 30 s.
	MaxAge time.Duration
	// Timeout bounds one observation; 0: 8 s, within Prometheus' default scrape timeout of 10 s.
	Timeout time.Duration
	Logger  *slog.Logger
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Collector is a prometheus.Collector of the fleet, one series per node:
//
//	cimdeploy_node_generation{node}                       the running generation (reachable nodes)
//	cimdeploy_node_info{node,commit,toplevel}             1 (reachable nodes)
//	cimdeploy_node_reachable{node}                        1 when its system was read over SSH
//	cimdeploy_node_healthy{node}                          1 when the rollout's health check passes
//	cimdeploy_node_drifted{node}                          1 when switched by hand (reachable nodes)
//	cimdeploy_node_at_desired_commit{node}                1 when it runs the desired commit
//	cimdeploy_node_last_deploy_timestamp_seconds{node}    when cimdeploy last recorded a deploy on it
//	cimdeploy_fleet_observation_success                   0 when the last observation failed
//	cimdeploy_fleet_observation_timestamp_seconds         when it was made
//	cimdeploy_fleet_observation_duration_seconds          how long it took
//
// It observes on scrape, not in a loop of its own: nodes are not polled while nobody scrapes, and
// there is no goroutine to own and stop. An observation (or its failure) answers the scrapes of the
// next MaxAge; concurrent scrapes wait for the same observation; one observation is bounded by
// Timeout (a node that does not answer in time is reported unreachable or unhealthy, not waited
// for). A failed observation (the state store, the repository) exports no node series, so that no
// stale value hides it, and sets cimdeploy_fleet_observation_success to 0; the scrape itself succeeds.
type Collector struct {
	obs  Observing
	opts CollectorOptions

	generation, info, reachable, healthy, drifted, atDesired, lastDeploy *prometheus.Desc
	success, timestamp, duration                                         *prometheus.Desc

	mu   sync.Mutex
	last snapshot
}

// snapshot is one observation as the scrapes of MaxAge see it.
type snapshot struct {
	fleet *Fleet
	err   error
	at    time.Time // when it was made; zero: never
	took  time.Duration
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector is the Collector of obs, registered with reg (nil: not registered). The daemon calls
// it with an Observer over its deployer:
//
//	obs := fleet.NewObserver(dep.OpenCluster, fleet.Options{Repo: dep.Source().String(), Branch: branch})
//	_, err := fleet.NewCollector(obs, reg, fleet.CollectorOptions{Logger: logger})
func NewCollector(obs Observing, reg prometheus.Registerer, opts CollectorOptions) (*Collector, error) {
	if opts.MaxAge <= 0 {
		opts.MaxAge = 30 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 8 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	node := []string{"node"}
	c := &Collector{obs: obs, opts: opts,
		generation: prometheus.NewDesc("cimdeploy_node_generation",
			"The NixOS system profile generation the node runs (the newest holding its running system; 0: none does).", node, nil),
		info: prometheus.NewDesc("cimdeploy_node_info",
			"Always 1: the commit the node's running system came from (empty when unknown) and the system's store path.",
			[]string{"node", "commit", "toplevel"}, nil),
		reachable: prometheus.NewDesc("cimdeploy_node_reachable",
			"1 when the node's running system and generations were read over SSH.", node, nil),
		healthy: prometheus.NewDesc("cimdeploy_node_healthy",
			"1 when the node's nats-server passes the rollout's health check: /healthz, routed to every other node, a JetStream meta leader.", node, nil),
		drifted: prometheus.NewDesc("cimdeploy_node_drifted",
			"1 when the node runs another system than cimdeploy last deployed on it (switched by hand).", node, nil),
		atDesired: prometheus.NewDesc("cimdeploy_node_at_desired_commit",
			"1 when the node runs the commit of the last successful deploy of the deploy branch.", node, nil),
		lastDeploy: prometheus.NewDesc("cimdeploy_node_last_deploy_timestamp_seconds",
			"When cimdeploy last recorded a deployment on the node (its node record), as a Unix time.", node, nil),
		success: prometheus.NewDesc("cimdeploy_fleet_observation_success",
			"1 when the last observation of the fleet succeeded; 0 when the state store or the repository failed it (no node series then).", nil, nil),
		timestamp: prometheus.NewDesc("cimdeploy_fleet_observation_timestamp_seconds",
			"When the fleet was last observed, as a Unix time.", nil, nil),
		duration: prometheus.NewDesc("cimdeploy_fleet_observation_duration_seconds",
			"How long the last observation of the fleet took.", nil, nil),
	}
	if reg != nil {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.generation, c.info, c.reachable, c.healthy, c.drifted, c.atDesired,
		c.lastDeploy, c.success, c.timestamp, c.duration} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the observation of the last MaxAge, or a new one.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.observation()
	if s.at.IsZero() {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.timestamp, float64(s.at.UnixNano())/1e9)
	gauge(c.duration, s.took.Seconds())
	if s.err != nil {
		gauge(c.success, 0)
		return
	}
	gauge(c.success, 1)
	for _, n := range s.fleet.Nodes {
		gauge(c.reachable, bit(n.Reachable), n.Node)
		gauge(c.healthy, bit(n.Healthy), n.Node)
		gauge(c.atDesired, bit(n.AtDesired), n.Node)
		if n.Reachable {
			gauge(c.generation, float64(n.Generation), n.Node)
			gauge(c.info, 1, n.Node, n.Commit, n.Toplevel)
			gauge(c.drifted, bit(n.Drifted), n.Node)
		}
		if !n.Record.Deployed.IsZero() {
			gauge(c.lastDeploy, float64(n.Record.Deployed.UnixNano())/1e9, n.Node)
		}
	}
}

// observation returns the observation of the last MaxAge, observing again when there is none.
func (c *Collector) observation() snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !c.last.at.IsZero() && now.Sub(c.last.at) < c.opts.MaxAge {
		return c.last
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	f, err := c.obs.Observe(ctx)
	c.last = snapshot{fleet: f, err: err, at: now, took: c.now().Sub(now)}
	switch {
	case err != nil:
		c.opts.Logger.Warn("cannot observe the fleet", "err", err)
	case !f.OK():
		c.opts.Logger.Debug("fleet observed: nodes need attention", "problems", f.Problems())
	}
	return c.last
}

func (c *Collector) now() time.Time {
	if c.opts.Now != nil {
		return c.opts.Now()
	}
	return time.Now()
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
