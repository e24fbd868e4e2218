package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"

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
