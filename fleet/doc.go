// Package fleet observes the deployed cluster as it is, outside any run: for every node of the
// topology the generation it runs and the commit that came from, the commit it should run (the last
// successful deploy of the deploy branch), its NATS health (the rollout's own checks: /healthz, routes
// to every other node, a JetStream meta leader), whether it was switched behind cimdeploy's back (the
// rollout pre-flight's "switched by hand"), and its recent generations.
//
// Observe reads one observation from the parts of a rollout; an Observer keeps a cluster open for
// repeated observations; `cimdeploy status` prints one, and Collector exports them to Prometheus.
// A node that cannot be reached is part of the observation, not an error: only a state store that
// fails is.
package fleet
