// Package rollout changes a live NATS JetStream cluster of NixOS nodes one node at a time, without
// losing a message, and undoes a bad change by itself.
//
// The flow: Observe looks at every node (what it runs, its generations, the state store's record,
// health); NewPlan decides, as pure data, what happens to each node and in which order (new nodes
// first, then the followers, the JetStream meta leader last) and what makes the rollout refuse
// (an unhealthy cluster, a node switched by hand, a commit that failed there before), and groups the
// nodes (waves.go): each NATS cluster one member at a time, a hub's leaves after it in batches, other
// roles in batches; Run walks each group in a plain loop, the groups side by side (groups.go), at
// most Config.MaxParallel nodes at once. Per node (switchNode): guard, copy the closure, arm a dead-man timer on the node
// (a transient systemd timer that switches back to the previous generation unless disarmed), set the
// profile, activate in a transient unit (a dropped SSH connection cannot stop it; the controller
// reconnects and polls) -- these three in one SSH command --, gate (healthz, routes, meta leader,
// system ping, a new SSH connection), disarm, record. A failure rolls the node back, deletes the failed generation, records the commit
// as failed for that node and halts its group and the groups that depend on it (the others finish
// the node in flight and stop, unless Config.KeepGoing); a rollback is a failure. Cancellation is checked between nodes:
// a node whose switch began is finished on a context of its own.
//
// The node side is System (SSHSystem over package remote), the NATS side Cluster (NATS over the
// monitoring endpoints and the system account); package rollouttest has fakes of both with knobs, and
// the contract suite (system_test.go) runs against the fakes and the lab.
//
// A full rolling deploy from Go, for example of a lab (fixtures/lab), whose Env holds the SSH settings:
//
//	env := map[string]string{}
//	for _, e := range l.Env() {
//		env[e.Name] = e.Value
//	}
//	sshCfg, _ := remote.LoadConfig(ctx, envconfig.MapLookuper(env))
//	cfg, _ := rollout.LoadConfig(ctx, nil) // or a Config with short timeouts
//	pool, _ := remote.NewPool(sshCfg, remote.Options{Logger: logger})
//	defer pool.Close()
//	r, _ := rollout.Connect(pool, l.Topology(), sshCfg, cfg, states, logger) // states: a *store.Store or nil
//	toplevels, _ := l.Build(ctx, changedTopology)
//	plan, res, err := r.Deploy(ctx, rollout.Request{RunID: "bench-1", Commit: "c2",
//		Targets: rollout.Targets(toplevels, "c2")}, nil)
//
// res.Nodes holds each node's Activation (switch-to-configuration, services restarted) and Rejoin (the
// gate: until it is healthy and clustered again) durations and the commit it runs after the rollout;
// res.CriticalPath is the longest chain of sequential steps, to set beside res.Duration. The pipeline stage is stages.Rollout.
package rollout
