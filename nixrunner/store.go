package nixrunner

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Valid reports which of storePaths are valid in the local store (built or substituted and registered),
// with nix-store --check-validity --print-invalid, which Nix 2.8 and newer answer alike. Each path must
// be an absolute store path (/nix/store/<hash>-<name>, no subdirectory); a path that is not is an *Error
// of KindEval. Duplicates are fine; no paths means no nix call.
func (r *Runner) Valid(ctx context.Context, storePaths ...string) (map[string]bool, error) {
	valid := make(map[string]bool, len(storePaths))
	if len(storePaths) == 0 {
		return valid, nil
	}
	for _, p := range storePaths {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return nil, fmt.Errorf("nix-store --check-validity: %q is not an absolute store path", p)
		}
		valid[p] = true
	}
	args := append([]string{"--check-validity", "--print-invalid"}, storePaths...)
	stdout, err := r.run(ctx, opCheckValidity, r.nixStore, args, nil)
	if err != nil {
		return nil, err
	}
	for l := range strings.SplitSeq(string(stdout), "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		if _, ok := valid[l]; !ok {
			return nil, errors.New("nix-store --check-validity: unexpected output " + l)
		}
		valid[l] = false
	}
	return valid, nil
}

// DiffClosures describes what changes from the closure of from to the closure of to (nix store
// diff-closures: versions added, removed and changed, and the size difference), as a person reads it;
// empty when nothing does. Both must be valid in the local store.
func (r *Runner) DiffClosures(ctx context.Context, from, to string) (string, error) {
	for _, p := range []string{from, to} {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return "", fmt.Errorf("nix store diff-closures: %q is not an absolute store path", p)
		}
	}
	args := append(append([]string{}, experimentalFeatures...), "store", "diff-closures", from, to)
	stdout, err := r.run(ctx, opDiffClosures, r.nix, args, nil)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(stdout), "\n"), nil
}
