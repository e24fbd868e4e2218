package stages

import (
	"context"
	"errors"

	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline"
)

// Nix is what the check and build stages need from nix; *nixrunner.Runner implements it.
type Nix interface {
	FlakeCheckCached(ctx context.Context, cache nixrunner.CheckCache, commit, flakeDir string, progress func(nixrunner.Progress)) (bool, error)
	Build(ctx context.Context, flakeDir string, attrs []string, progress func(nixrunner.Progress)) ([]nixrunner.Built, error)
}

var _ Nix = (*nixrunner.Runner)(nil)

// located wraps err as a pipeline error of stage and node, carrying a nix failure's exit code and last
// lines into the step's result.
func located(stage, node string, err error) error {
	if err == nil {
		return nil
	}
	pe := &pipeline.Error{Stage: stage, Node: node, Err: err}
	var ne *nixrunner.Error
	if errors.As(err, &ne) {
		pe.ExitCode, pe.LastLines = ne.ExitCode, ne.LastLines
	}
	return pe
}

// asNixError is the nix failure inside err, or nil.
func asNixError(err error) *nixrunner.Error {
	var ne *nixrunner.Error
	if errors.As(err, &ne) {
		return ne
	}
	return nil
}
