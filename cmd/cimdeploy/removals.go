package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/cimdeploy/cimdeploy/rollout"
)

// printRemovals writes the removed nodes the plan takes out (or leaves for later), with their steps.
func printRemovals(w io.Writer, plan *rollout.Plan) {
	for _, rm := range plan.Removals {
		if rm.Deferred != "" {
			fmt.Fprintf(w, "\n%s: removed by the events, left alone: %s\n", rm.Node, rm.Deferred)
			continue
		}
		what := "remove"
		if rm.Destroy {
			what = "remove and DESTROY its container"
		}
		fmt.Fprintf(w, "\n%s: %s (vmid %d, NATS server %s):\n", rm.Node, what, rm.VMID, map[bool]string{true: "running", false: "not answering"}[rm.Running])
		for i, s := range rm.Steps {
			fmt.Fprintf(w, "  %d. %s\n", i+1, s)
		}
	}
}

// question is what the plan asks before it changes anything.
func question(plan *rollout.Plan) string {
	var parts []string
	recreated := 0
	for _, np := range plan.Nodes {
		if np.Action == rollout.ActionRecreate {
			recreated++
		}
	}
	if n := plan.Changes() - removals(plan, false) - recreated; n > 0 {
		parts = append(parts, fmt.Sprintf("Switch %d node(s) to %s", n, short(plan.Commit)))
	}
	if recreated > 0 {
		data := "their JetStream data WIPED"
		if plan.KeepData {
			data = "their JetStream data kept"
		}
		parts = append(parts, fmt.Sprintf("DESTROY and recreate %d container(s) from their templates, %s", recreated, data))
	}
	if n := removals(plan, false); n > 0 {
		parts = append(parts, fmt.Sprintf("take %d removed node(s) out of the cluster", n))
	}
	if n := removals(plan, true); n > 0 {
		parts = append(parts, fmt.Sprintf("DESTROY the container(s) of %d of them (their data is lost)", n))
	}
	if len(parts) == 0 {
		return "Go ahead? [y/N] "
	}
	q := strings.Join(parts, ", and ")
	return strings.ToUpper(q[:1]) + q[1:] + "? [y/N] "
}

// removals counts the plan's removals that run (destroying only: those that destroy a container).
func removals(plan *rollout.Plan, destroying bool) int {
	n := 0
	for _, rm := range plan.Removals {
		if rm.Deferred == "" && (!destroying || rm.Destroy) {
			n++
		}
	}
	return n
}
