package stages

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/remote"
)

// Publish uploads every built node's LXC template to Proxmox and records the volumes in the run
// (run.Templates), from which the rollout creates the containers of new nodes. Uploads are
// content-addressed: an unchanged template moves nothing (the step says "unchanged"). Without a
// Proxmox host the stage does nothing, says so, and new nodes cannot be provisioned.
type Publish struct {
	Proxmox remote.Proxmox // nil: no Proxmox host configured
	// Workers bounds concurrent uploads (default 2).
	Workers int
}

// Name implements pipeline.Stage.
func (Publish) Name() string { return "publish" }

// Run implements pipeline.Stage.
func (p Publish) Run(ctx context.Context, s *pipeline.StageRun) error {
	run := s.Run
	if len(run.Artifacts) == 0 {
		return errors.New("nothing to publish: the build stage did not run")
	}
	if p.Proxmox == nil {
		s.Logger.Warn("no Proxmox host (CIMDEPLOY_PROXMOX_HOST): templates not published; new nodes cannot be provisioned")
		return nil
	}
	nodes := make([]string, 0, len(run.Artifacts))
	for n := range run.Artifacts {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	workers := p.Workers
	if workers <= 0 {
		workers = 2
	}
	var mu sync.Mutex
	templates := map[string]string{}
	err := s.EachLimit(ctx, nodes, workers, func(ctx context.Context, st *pipeline.Step) error {
		file, err := TemplateFile(run.Artifacts[st.Node].Tarball)
		if err != nil {
			return located("publish", st.Node, err)
		}
		up, err := p.Proxmox.UploadTemplate(ctx, remote.Template{Node: st.Node, File: file})
		if err != nil {
			return located("publish", st.Node, err)
		}
		if up.Skipped {
			st.Note("unchanged: %s", up.Name)
		} else {
			st.Note("uploaded %s (%d bytes)", up.Name, up.Sent)
		}
		fmt.Fprintf(st.Output, "template %s\n", up.Volume)
		mu.Lock()
		templates[st.Node] = up.Volume
		mu.Unlock()
		return nil
	})
	run.Templates = templates
	return err
}

// TemplateFile is the .tar.xz of a node's built LXC tarball: the output itself when it is the file,
// else the one file in its tarball/ directory (nixpkgs' and nixos-generators' layout).
func TemplateFile(out string) (string, error) {
	if out == "" {
		return "", errors.New("no LXC tarball was built")
	}
	if strings.HasSuffix(out, ".tar.xz") {
		return out, nil
	}
	files, err := filepath.Glob(filepath.Join(out, "tarball", "*.tar.xz"))
	if err != nil {
		return "", err
	}
	if len(files) != 1 {
		if _, err := os.Stat(out); err != nil {
			return "", err
		}
		return "", fmt.Errorf("%s: want one tarball/*.tar.xz, found %d", out, len(files))
	}
	return files[0], nil
}
