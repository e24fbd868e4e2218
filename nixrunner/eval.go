package nixrunner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Eval evaluates the flake output attribute attr of the flake in flakeDir (nix eval --json
// path:<flakeDir>#<attr>) and decodes the JSON value into out. It builds nothing, except what the
// expression imports from a derivation. A failure is an *Error of KindEval (or KindBuild for a failed
// import-from-derivation, KindTimeout, KindCanceled, KindNotFound); an undecodable value is a plain error.
func (r *Runner) Eval(ctx context.Context, flakeDir, attr string, out any) error {
	if attr == "" {
		return errors.New("nix eval: empty attribute")
	}
	ref, err := flakeRef(flakeDir)
	if err != nil {
		return fmt.Errorf("nix eval: %w", err)
	}
	stdout, err := r.run(ctx, opEval, r.nix, r.flakeArgs("eval", "--json", ref+"#"+attr), nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		return fmt.Errorf("nix eval %s#%s: decode --json output: %w", ref, attr, err)
	}
	return nil
}

// OutPath evaluates the store path a derivation attribute would build (<attr>.outPath) without building
// it. Evaluation writes the .drv files into the store, so Build of the same attribute later only builds.
// With Valid it tells whether the build can be skipped.
func (r *Runner) OutPath(ctx context.Context, flakeDir, attr string) (string, error) {
	if attr == "" {
		return "", errors.New("nix eval: empty attribute")
	}
	var p string
	if err := r.Eval(ctx, flakeDir, attr+".outPath", &p); err != nil {
		return "", err
	}
	if p == "" {
		return "", fmt.Errorf("nix eval %s.outPath: empty store path", attr)
	}
	return p, nil
}
