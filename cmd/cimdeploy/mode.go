package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// addModeFlag adds --mode, how each node's switch activates (rollout.Mode), to the commands that
// switch nodes on a person's request.
func addModeFlag(f *pflag.FlagSet, c *rollout.Config) {
	f.StringVar((*string)(&c.Mode), "mode", string(c.Mode), "how each node activates: switch (live, the new boot default), "+
		"test (live, the boot default unchanged: a canary), boot (the new boot default, then pct reboot) [CIMDEPLOY_ROLLOUT_MODE]")
}

// printMode says the plan's activation mode, when it is not switch, and the nodes whose switch
// becomes a boot because switch inhibitors changed.
func printMode(w io.Writer, plan *rollout.Plan) {
	if plan.Mode != "" {
		fmt.Fprintf(w, "activation mode: %s\n", plan.Mode)
	}
	for _, np := range plan.Nodes {
		if len(np.Inhibitors) > 0 && np.Mode == rollout.ModeBoot {
			fmt.Fprintf(w, "%s: switch inhibitors changed, so it boots the new system and its container restarts:\n", np.Node)
			for _, c := range np.Inhibitors {
				fmt.Fprintf(w, "  %s\n", c)
			}
		}
	}
}

// testDrift is the status table's DRIFT column for a node running the test activation its record
// holds (cimdeploy rollout --mode test), else drift.
func testDrift(drift, running string, rec rollout.NodeState) string {
	if rec.Test == nil || running == "" || running != rec.Test.Toplevel {
		return drift
	}
	return fmt.Sprintf("test activation of %s (boot default: generation %d)", orNone(short(rec.Test.Commit)), rec.Generation)
}

// printTestActivation says, under a node's generations, that the node runs a test activation (no
// generation holds the system it runs) and of which commit, when its record says so.
func printTestActivation(ctx context.Context, w io.Writer, c *deploy.Cluster, node string, gens []deploy.NodeGeneration) error {
	for _, g := range gens {
		if g.Running {
			return nil
		}
	}
	sys, ok := c.Rollout.Systems[node]
	if !ok || c.Rollout.States == nil {
		return nil
	}
	cur, err := sys.Current(ctx)
	if err != nil || cur == "" {
		return nil
	}
	rec, _, err := rollout.ReadState(ctx, c.Rollout.States, node)
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	if rec.Test != nil && rec.Test.Toplevel == cur {
		fmt.Fprintf(w, "\nrunning: %s, a test activation of commit %s (run %s, since %s): no generation holds it; the boot default is generation %d\n",
			storeName(cur), orNone(short(rec.Test.Commit)), rec.Test.RunID, rec.Test.Since.Local().Format("2006-01-02 15:04:05"), rec.Generation)
		return nil
	}
	fmt.Fprintf(w, "\nrunning: %s, which no generation holds\n", storeName(cur))
	return nil
}
