package projection

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// Write puts files under dir atomically: every file is first written in full to a temporary file next
// to its destination and synced, and only when all are written are they renamed into place, so an
// interrupted Write leaves each file either old or new, never half-written. Unchanged files are not
// touched.
func Write(dir string, files []File) (changed []string, err error) {
	type staged struct{ tmp, dst, rel string }
	var stage []staged
	defer func() {
		for _, s := range stage {
			os.Remove(s.tmp) // no-op after a successful rename
		}
	}()
	for _, f := range files {
		dst := filepath.Join(dir, filepath.FromSlash(f.Path))
		old, err := os.ReadFile(dst)
		if err == nil && bytes.Equal(old, f.Data) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.Path, err)
		}
		tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", f.Path, err)
		}
		stage = append(stage, staged{tmp: tmp.Name(), dst: dst, rel: f.Path})
		_, werr := tmp.Write(f.Data)
		if werr == nil {
			werr = tmp.Chmod(0o644)
		}
		if werr == nil {
			werr = tmp.Sync()
		}
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("write %s: %w", f.Path, werr)
		}
	}
	for _, s := range stage {
		if err := os.Rename(s.tmp, s.dst); err != nil {
			return changed, fmt.Errorf("write %s: %w", s.rel, err)
		}
		changed = append(changed, s.rel)
	}
	return changed, nil
}

// Diff compares the files under dir with files and returns a unified diff of what differs (empty when
// nothing does). A missing file is diffed against nothing.
func Diff(dir string, files []File) (string, error) {
	var out strings.Builder
	for _, f := range files {
		old, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("read %s: %w", f.Path, err)
		}
		if bytes.Equal(old, f.Data) {
			continue
		}
		from := "a/" + f.Path
		if old == nil {
			from = "/dev/null"
		}
		d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A:        difflib.SplitLines(string(old)),
			B:        difflib.SplitLines(string(f.Data)),
			FromFile: from,
			ToFile:   "b/" + f.Path,
			Context:  3,
		})
		if err != nil {
			return "", fmt.Errorf("diff %s: %w", f.Path, err)
		}
		out.WriteString(d)
	}
	return out.String(), nil
}
