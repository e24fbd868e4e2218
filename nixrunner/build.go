package nixrunner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Built is one result of Build.
type Built struct {
	Attr    string            `json:"attr"`    // the flake output attribute it was built from
	DrvPath string            `json:"drvPath"` // the derivation
	Outputs map[string]string `json:"outputs"` // output name ("out", ...) -> store path
	// Machines are the remote builders that built derivations of it in this call (Nix copied their
	// outputs back), sorted; empty when everything was built here or nothing was built.
	Machines []string `json:"machines,omitempty"`
}

// Build builds the flake output attributes attrs of the flake in flakeDir (nix build --json --no-link, so
// no result symlink is written) and returns one Built per attribute, in order. The outputs come from
// --json, which Nix 2.8 and newer print alike (2.8 has no --print-out-paths). progress, if not nil, is
// called from one goroutine at a time, never after Build returned. Outputs already valid in the store
// are not rebuilt, and then no log line is reported.
//
// Each attribute is built by a nix call of its own, one after the other: nix build --json does not list
// its results in the order of the installables (Nix 2.8 sorts them by derivation, NixOS/nix#7472), and
// two attributes may have derivations of the same name, so one call's results could not be told apart.
// Nix evaluates the flake once per call; the progress counts start again with each call.
//
// A failure is an *Error: KindBuild when a derivation failed (LastLines hold its log tail), KindEval
// when an attribute did not evaluate, or KindTimeout, KindCanceled, KindNotFound. The attributes after
// a failed one are not built.
func (r *Runner) Build(ctx context.Context, flakeDir string, attrs []string, progress func(Progress)) ([]Built, error) {
	if len(attrs) == 0 {
		return nil, errors.New("nix build: no attribute")
	}
	ref, err := flakeRef(flakeDir)
	if err != nil {
		return nil, fmt.Errorf("nix build: %w", err)
	}
	for _, a := range attrs {
		if a == "" {
			return nil, errors.New("nix build: empty attribute")
		}
	}
	built := make([]Built, 0, len(attrs))
	for _, a := range attrs {
		machines := map[string]bool{}
		stdout, err := r.run(ctx, opBuild, r.nix, r.flakeArgs("build", "--json", "--no-link", ref+"#"+a), func(p Progress) {
			if p.Machine != "" {
				machines[p.Machine] = true
			}
			if progress != nil {
				progress(p)
			}
		})
		if err != nil {
			return nil, err
		}
		b, err := parseBuildJSON(stdout, []string{a})
		if err != nil {
			return nil, fmt.Errorf("nix build %s: %w", ref, err)
		}
		for i := range b {
			b[i].Machines = slices.Sorted(maps.Keys(machines))
		}
		built = append(built, b...)
	}
	return built, nil
}

// parseBuildJSON reads nix build --json: [{"drvPath": …, "outputs": {"out": …}}, …], one entry per
// installable, which Build matches to attrs by position, so it passes one (a store-path installable has
// {"path": …} instead; newer Nix adds fields such as startTime and stopTime, which are ignored).
func parseBuildJSON(stdout []byte, attrs []string) ([]Built, error) {
	var raw []struct {
		DrvPath string            `json:"drvPath"`
		Outputs map[string]string `json:"outputs"`
		Path    string            `json:"path"`
	}
	if err := json.Unmarshal(stdout, &raw); err != nil {
		return nil, fmt.Errorf("decode --json output: %w", err)
	}
	if len(raw) != len(attrs) {
		return nil, fmt.Errorf("--json output has %d results for %d attributes", len(raw), len(attrs))
	}
	built := make([]Built, len(raw))
	for i, b := range raw {
		outputs := b.Outputs
		if len(outputs) == 0 && b.Path != "" {
			outputs = map[string]string{"out": b.Path}
		}
		if len(outputs) == 0 {
			return nil, fmt.Errorf("--json output: %s: no output path", attrs[i])
		}
		built[i] = Built{Attr: attrs[i], DrvPath: b.DrvPath, Outputs: outputs}
	}
	return built, nil
}
