package stages

import (
	"context"
	"fmt"
	"regexp"
	"slices"

	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline"
)

// Check runs `nix flake check` on the workspace. The verdict is cached per (commit, flake.lock,
// overrides), so a commit checked once is not checked again, failed or not.
type Check struct {
	Nix   Nix
	Cache nixrunner.CheckCache // nil: no cache
}

// Name implements pipeline.Stage.
func (Check) Name() string { return "check" }

// nodeAttr finds the node a nix error is about: nixosConfigurations.<node> or packages.<system>.<node>-lxc.
var nodeAttr = regexp.MustCompile(`nixosConfigurations\.([a-z0-9-]+)|packages\.[a-z0-9_-]+\.([a-z0-9-]+)-lxc`)

// Run implements pipeline.Stage.
func (c Check) Run(ctx context.Context, s *pipeline.StageRun) error {
	run := s.Run
	return s.Each(ctx, []string{"flake"}, func(ctx context.Context, st *pipeline.Step) error {
		cached, err := c.Nix.FlakeCheckCached(ctx, c.Cache, run.Commit, run.Workspace, func(p nixrunner.Progress) {
			if p.Line != "" {
				fmt.Fprintln(st.Output, p.Line)
			}
			if p.Expected > 0 {
				st.Progress(ctx, p.Done, p.Expected, p.Activity)
			}
		})
		if cached {
			st.Note("cached verdict")
		}
		// The step is the whole flake; the error names the node nix complained about, when it is one.
		return located("check", failingNode(err, run.Nodes), err)
	})
}

// failingNode names the node a nix error's last lines mention, or "" when none or several.
func failingNode(err error, nodes []string) string {
	var lines []string
	if err == nil {
		return ""
	}
	if ne := asNixError(err); ne != nil {
		lines = ne.LastLines
	}
	found := ""
	for _, l := range lines {
		for _, m := range nodeAttr.FindAllStringSubmatch(l, -1) {
			name := m[1] + m[2]
			if !slices.Contains(nodes, name) {
				continue
			}
			if found != "" && found != name {
				return ""
			}
			found = name
		}
	}
	return found
}
