package projection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/pmezard/go-difflib/difflib"
)

// MaxFileSize bounds a generated file that Write and Diff read back from a directory (a repository's
// committed projection): the projection of a thousand nodes is under 1 MiB, so a larger file is not one
// cimdeploy wrote, and reading it whole could exhaust memory.
const MaxFileSize = 16 << 20

// manifestName is the file Write keeps in dir while it renames a set of files into place: it lists the
// staged temporary files, so an interrupted Write is finished by the next one.
const manifestName = ".cimdeploy-generate.json"

// tmpMarker is in the name of every temporary file Write makes: "."+base+tmpMarker+random.
const tmpMarker = ".cimdeploy-tmp-"

// ErrUnsafePath is in the chain of every error about a path Write or Diff will not go through: a
// symlink, a special file, a directory where a file belongs, a file over MaxFileSize.
var ErrUnsafePath = errors.New("unsafe path")

type manifest struct {
	Files []staged `json:"files"`
}

type staged struct {
	Tmp string `json:"tmp"` // relative to dir
	Dst string `json:"dst"` // relative to dir
}

// Write puts files under dir as one set: every changed file is first written in full to a temporary
// file next to its destination and synced, then a manifest listing them is written, then they are
// renamed into place and the manifest removed. A Write killed before the manifest exists leaves the old
// set; one killed after it leaves a manifest that the next Write (or Recover) completes, so the files are
// the old set or the new one, never a mix. Stale temporary files are removed. Unchanged files are not
// touched.
//
// Write never goes through a link: a destination, or a directory on its way, that is a symlink or a
// special file is refused with an error wrapping ErrUnsafePath that names it, and nothing is written.
// A repository role's module (File.Role) is checked with CheckModule before anything is written, and
// never written, replaced or removed.
func Write(dir string, files []File) (changed []string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	if err := Recover(dir); err != nil {
		return nil, err
	}
	if err := checkModules(dir, files); err != nil {
		return nil, err
	}
	var stage []staged
	defer func() {
		if err != nil {
			for _, s := range stage {
				os.Remove(filepath.Join(dir, s.Tmp))
			}
		}
	}()
	for _, f := range files {
		if f.Role != "" {
			continue // a repository role's module: checked, never written
		}
		old, err := readFile(dir, f.Path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("write %s: %w", f.Path, err)
		}
		if err == nil && bytes.Equal(old, f.Data) {
			continue
		}
		if err := mkdirs(dir, filepath.Dir(filepath.FromSlash(f.Path))); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.Path, err)
		}
		dst := filepath.Join(dir, filepath.FromSlash(f.Path))
		tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+tmpMarker+"*")
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", f.Path, err)
		}
		rel, _ := filepath.Rel(dir, tmp.Name())
		stage = append(stage, staged{Tmp: filepath.ToSlash(rel), Dst: f.Path})
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
	if len(stage) == 0 {
		return nil, nil
	}
	if err := writeManifest(dir, manifest{Files: stage}); err != nil {
		return nil, err
	}
	if err := finish(dir, stage); err != nil {
		return nil, err
	}
	for _, s := range stage {
		changed = append(changed, s.Dst)
	}
	return changed, nil
}

// Recover finishes a Write that was interrupted after its manifest was written, and removes the
// temporary files of Writes interrupted before: afterwards dir holds one whole set. A dir without a
// manifest or temporary files is left as it is.
func Recover(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, manifestName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("recover %s: %w", manifestName, err)
	default:
		var m manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("recover %s: %w", manifestName, err)
		}
		for _, s := range m.Files {
			if !filepath.IsLocal(filepath.FromSlash(s.Tmp)) || !filepath.IsLocal(filepath.FromSlash(s.Dst)) || !strings.Contains(s.Tmp, tmpMarker) {
				return fmt.Errorf("recover %s: %q -> %q is not a file of a projection: %w", manifestName, s.Tmp, s.Dst, ErrUnsafePath)
			}
		}
		if err := finish(dir, m.Files); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
	}
	return removeStale(dir)
}

// finish renames the staged files into place (those already renamed are gone) and removes the
// manifest.
func finish(dir string, stage []staged) error {
	for _, s := range stage {
		if err := checkPath(dir, s.Dst, true); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("write %s: %w", s.Dst, err)
		}
		err := os.Rename(filepath.Join(dir, filepath.FromSlash(s.Tmp)), filepath.Join(dir, filepath.FromSlash(s.Dst)))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("write %s: %w", s.Dst, err)
		}
	}
	syncDir(dir)
	if err := os.Remove(filepath.Join(dir, manifestName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", manifestName, err)
	}
	syncDir(dir)
	return nil
}

func writeManifest(dir string, m manifest) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+manifestName+tmpMarker+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", manifestName, err)
	}
	_, werr := tmp.Write(data)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), filepath.Join(dir, manifestName))
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", manifestName, werr)
	}
	syncDir(dir)
	return nil
}

// removeStale removes the temporary files left by interrupted Writes: in dir and in the directories of
// the projection's files.
func removeStale(dir string) error {
	for _, d := range []string{".", "nixosModules"} {
		if checkPath(dir, d, false) != nil {
			continue // missing, or not a directory cimdeploy may touch
		}
		entries, err := os.ReadDir(filepath.Join(dir, d))
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.Type().IsRegular() && strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), tmpMarker) {
				if err := os.Remove(filepath.Join(dir, d, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("remove stale %s: %w", e.Name(), err)
				}
			}
		}
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// checkPath checks the directories from dir down to rel (slash-separated) with Lstat: each must be a
// real directory, and rel itself a regular file (isFile) or a directory. A missing component gives an
// error wrapping fs.ErrNotExist.
func checkPath(dir, rel string, isFile bool) error {
	parts := strings.Split(filepath.ToSlash(filepath.Clean(filepath.FromSlash(rel))), "/")
	if rel == "." || rel == "" {
		parts = nil
	}
	if slices.Contains(parts, "..") {
		return fmt.Errorf("%s leaves the directory: %w", rel, ErrUnsafePath)
	}
	p := dir
	for i, part := range parts {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		last := i == len(parts)-1
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symlink; refusing to go through it: %w", strings.Join(parts[:i+1], "/"), ErrUnsafePath)
		case last && isFile && !fi.Mode().IsRegular():
			return fmt.Errorf("%s is not a regular file (%s): %w", strings.Join(parts[:i+1], "/"), fi.Mode().Type(), ErrUnsafePath)
		case (!last || !isFile) && !fi.IsDir():
			return fmt.Errorf("%s is not a directory (%s): %w", strings.Join(parts[:i+1], "/"), fi.Mode().Type(), ErrUnsafePath)
		}
	}
	return nil
}

// mkdirs makes the directories of rel under dir that are missing, refusing links on the way.
func mkdirs(dir, rel string) error {
	if rel == "." {
		return nil
	}
	p := ""
	for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
		p = filepath.Join(p, part)
		err := checkPath(dir, p, false)
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(filepath.Join(dir, p), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			err = checkPath(dir, p, false)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// readFile reads the file rel under dir without following a link anywhere on the way (O_NOFOLLOW on
// the file, Lstat on the directories), without blocking on a FIFO (O_NONBLOCK; only regular files are
// read) and up to MaxFileSize bytes.
func readFile(dir, rel string) ([]byte, error) {
	if err := checkPath(dir, rel, true); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, filepath.FromSlash(rel)), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symlink; refusing to read through it: %w", rel, ErrUnsafePath)
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s): %w", rel, fi.Mode().Type(), ErrUnsafePath)
	}
	if fi.Size() > MaxFileSize { // refused before reading; the limit below catches a file that grows
		return nil, fmt.Errorf("%s is over %d bytes, more than a projection holds: %w", rel, MaxFileSize, ErrUnsafePath)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s is over %d bytes, more than a projection holds: %w", rel, MaxFileSize, ErrUnsafePath)
	}
	return data, nil
}

// Diff compares the files under dir with files and returns a unified diff of what differs (empty when
// nothing does). A missing file is diffed against nothing; a repository role's module is checked
// (CheckModule), not diffed. It reads as Write does: never through a
// link, only regular files, at most MaxFileSize bytes each; anything else is an error wrapping
// ErrUnsafePath that names the path.
func Diff(dir string, files []File) (string, error) {
	if err := checkModules(dir, files); err != nil {
		return "", err
	}
	var out strings.Builder
	for _, f := range files {
		if f.Role != "" {
			continue // a repository role's module: the repository's own, checked above
		}
		old, err := readFile(dir, f.Path)
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

// MaxModuleSize bounds a repository role's module: a NixOS module of a role is a few kilobytes, so a
// larger file is no module.
const MaxModuleSize = 1 << 20

// ErrModule is in the chain of every error about a repository role's module that is missing or unsafe.
var ErrModule = errors.New("repository role module")

// CheckModule checks that a repository role's module f (File.Role set) is a regular file under dir, of
// at most MaxModuleSize bytes, reached without a symlink on the way (a link could leave the repository).
// The error names the RoleDefined event's role and the path, and wraps ErrModule (and ErrUnsafePath for
// a link, a special file or a directory). It reads nothing but the file's metadata.
func CheckModule(dir string, f File) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("the RoleDefined event of role %q names module %s, which %s: %w", f.Role, f.Path, fmt.Sprintf(format, args...), ErrModule)
	}
	err := checkPath(dir, f.Path, true)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail("is not in the repository (%s); add the role's NixOS module there", dir)
	case err != nil:
		return fmt.Errorf("%w: %w", fail("cimdeploy will not use"), err)
	}
	file, err := os.OpenFile(filepath.Join(dir, filepath.FromSlash(f.Path)), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("%w: %w", fail("cannot be opened"), err)
	}
	defer file.Close()
	fi, err := file.Stat()
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", fail("cannot be read"), err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %w", fail("is not a regular file (%s)", fi.Mode().Type()), ErrUnsafePath)
	case fi.Size() > MaxModuleSize:
		return fail("is %d bytes, over %d: no NixOS module of a role is that large", fi.Size(), MaxModuleSize)
	}
	return nil
}

// checkModules checks the repository role modules among files.
func checkModules(dir string, files []File) error {
	for _, f := range files {
		if f.Role != "" {
			if err := CheckModule(dir, f); err != nil {
				return err
			}
		}
	}
	return nil
}
