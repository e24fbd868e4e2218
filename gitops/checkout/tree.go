package checkout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// Limits bound what a commit may hold before Checkout writes it. A pull request's tree is hostile input:
// every check runs on the git objects, before a byte reaches the disk. The zero value means the
// defaults.
type Limits struct {
	// MaxFileSize bounds one file (default 100 MiB: GitHub refuses larger files in a push).
	MaxFileSize int64
	// MaxTreeSize bounds the sum of all files (default 1 GiB).
	MaxTreeSize int64
	// MaxEntries bounds the number of files, links and directories (default 100,000).
	MaxEntries int
}

// Defaults of Limits.
const (
	DefaultMaxFileSize = 100 << 20
	DefaultMaxTreeSize = 1 << 30
	DefaultMaxEntries  = 100_000
	// maxLinkTarget is the longest symlink target read (PATH_MAX less the NUL).
	maxLinkTarget = 4095
	// maxLinkHops is how many links a path may pass through when resolved (Linux's MAXSYMLINKS).
	maxLinkHops = 40
)

func (l Limits) withDefaults() Limits {
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = DefaultMaxFileSize
	}
	if l.MaxTreeSize <= 0 {
		l.MaxTreeSize = DefaultMaxTreeSize
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	return l
}

// ErrUnsafeTree is in the chain of every error about a commit's tree that Checkout refuses to write: a
// symlink that leaves the tree, a name git itself refuses, a file or tree over its Limits.
var ErrUnsafeTree = errors.New("unsafe tree")

// TreeError names the path of a commit's tree that Checkout refused, and why. It unwraps to
// ErrUnsafeTree.
type TreeError struct {
	Path   string // slash-separated, relative to the repository root; messages show it through events.Excerpt
	Reason string
}

func (e *TreeError) Error() string {
	return fmt.Sprintf("checkout: %s: %s", events.Excerpt(e.Path), e.Reason)
}

func (e *TreeError) Unwrap() error { return ErrUnsafeTree }

// checkTree walks the commit's tree and refuses it, with the path named, when writing it could reach
// outside the workspace or exhaust the host:
//
//   - an entry name git refuses ("", ".", "..", ".git" in any case, a '/' or NUL in it);
//   - a symlink whose target, resolved against the tree (".." and the links met on the way, up to 40),
//     leaves the tree or is absolute: a relative link is kept only when it stays inside;
//   - a link target longer than 4095 bytes or holding a NUL;
//   - a file over MaxFileSize, files over MaxTreeSize in sum, more than MaxEntries entries.
//
// Submodules (gitlinks) are left out of the workspace and need no check; git trees hold no device, FIFO
// or socket, so none can be written.
func checkTree(ctx context.Context, s storer.EncodedObjectStorer, commit *object.Commit, lim Limits) error {
	lim = lim.withDefaults()
	sizer, _ := s.(interface {
		EncodedObjectSize(plumbing.Hash) (int64, error)
	})
	w := treeWalk{ctx: ctx, s: s, sizer: sizer, lim: lim, links: map[string]string{}}
	if err := w.walk(commit.TreeHash, ""); err != nil {
		return err
	}
	for _, p := range w.order {
		if err := w.resolve(p); err != nil {
			return err
		}
	}
	return nil
}

type treeWalk struct {
	ctx   context.Context
	s     storer.EncodedObjectStorer
	sizer interface {
		EncodedObjectSize(plumbing.Hash) (int64, error)
	}
	lim     Limits
	entries int
	total   int64
	links   map[string]string // symlink path -> target
	order   []string          // symlinks in tree order
}

func (w *treeWalk) walk(h plumbing.Hash, dir string) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	t, err := object.GetTree(w.s, h)
	if err != nil {
		return fmt.Errorf("checkout: tree %s of %s: %w", h, events.Excerpt(dir), err)
	}
	for _, e := range t.Entries {
		p := path.Join(dir, e.Name)
		if dir == "" {
			p = e.Name
		}
		if err := checkName(e.Name); err != nil {
			return &TreeError{Path: p, Reason: err.Error()}
		}
		if w.entries++; w.entries > w.lim.MaxEntries {
			return &TreeError{Path: p, Reason: fmt.Sprintf("the tree has more than %d entries (the checkout limit)", w.lim.MaxEntries)}
		}
		switch e.Mode {
		case filemode.Dir:
			if err := w.walk(e.Hash, p); err != nil {
				return err
			}
		case filemode.Submodule:
		case filemode.Symlink:
			target, err := w.linkTarget(e.Hash, p)
			if err != nil {
				return err
			}
			w.links[p] = target
			w.order = append(w.order, p)
		case filemode.Regular, filemode.Executable, filemode.Deprecated:
			size, err := w.size(e.Hash, p)
			if err != nil {
				return err
			}
			if size > w.lim.MaxFileSize {
				return &TreeError{Path: p, Reason: fmt.Sprintf("%d bytes is over the checkout limit of %d bytes per file", size, w.lim.MaxFileSize)}
			}
			if w.total += size; w.total > w.lim.MaxTreeSize {
				return &TreeError{Path: p, Reason: fmt.Sprintf("the files up to here hold %d bytes, over the checkout limit of %d bytes per tree", w.total, w.lim.MaxTreeSize)}
			}
		default:
			return &TreeError{Path: p, Reason: fmt.Sprintf("unsupported git file mode %o", uint32(e.Mode))}
		}
	}
	return nil
}

// checkName refuses the entry names git's own fsck and checkout refuse (verify_path in git's read-cache.c).
func checkName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("entry name %q is not allowed in a git tree", name)
	case strings.EqualFold(name, ".git"):
		return errors.New("a tree entry named .git is not allowed")
	case strings.ContainsAny(name, "/\x00"):
		return errors.New("a tree entry name holds '/' or NUL")
	}
	return nil
}

func (w *treeWalk) size(h plumbing.Hash, p string) (int64, error) {
	if w.sizer != nil {
		n, err := w.sizer.EncodedObjectSize(h)
		if err != nil {
			return 0, fmt.Errorf("checkout: blob of %s: %w", events.Excerpt(p), err)
		}
		return n, nil
	}
	o, err := w.s.EncodedObject(plumbing.BlobObject, h)
	if err != nil {
		return 0, fmt.Errorf("checkout: blob of %s: %w", events.Excerpt(p), err)
	}
	return o.Size(), nil
}

func (w *treeWalk) linkTarget(h plumbing.Hash, p string) (string, error) {
	size, err := w.size(h, p)
	if err != nil {
		return "", err
	}
	if size > maxLinkTarget {
		return "", &TreeError{Path: p, Reason: fmt.Sprintf("symlink target of %d bytes is longer than %d", size, maxLinkTarget)}
	}
	b, err := object.GetBlob(w.s, h)
	if err != nil {
		return "", fmt.Errorf("checkout: symlink %s: %w", events.Excerpt(p), err)
	}
	r, err := b.Reader()
	if err != nil {
		return "", fmt.Errorf("checkout: symlink %s: %w", events.Excerpt(p), err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxLinkTarget+1))
	if err != nil {
		return "", fmt.Errorf("checkout: symlink %s: %w", events.Excerpt(p), err)
	}
	target := string(data)
	switch {
	case target == "":
		return "", &TreeError{Path: p, Reason: "symlink with an empty target"}
	case strings.ContainsRune(target, 0):
		return "", &TreeError{Path: p, Reason: "symlink target holds a NUL byte"}
	}
	return target, nil
}

// resolve follows the link at p through the tree, component by component, as the kernel would once it
// is written, and refuses it when the walk leaves the tree: an absolute target, a ".." above the root
// (directly or through another link), or more than maxLinkHops links. A target that does not exist in
// the tree is allowed when it stays inside (a dangling link reaches nothing).
func (w *treeWalk) resolve(p string) error {
	refuse := func(why string) error {
		return &TreeError{Path: p, Reason: fmt.Sprintf("symlink to %s %s", events.Excerpt(w.links[p]), why)}
	}
	hops := 0
	// pending is the components still to walk, resolved is where the walk stands (inside the tree).
	var resolved []string
	pending := splitLink(path.Dir(p), w.links[p])
	if pending == nil {
		return refuse("is absolute")
	}
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(resolved) == 0 {
				return refuse("leaves the tree")
			}
			resolved = resolved[:len(resolved)-1]
			continue
		}
		here := strings.Join(append(resolved, c), "/")
		target, isLink := w.links[here]
		if !isLink {
			// A directory, a file or a name the tree does not hold: below it only a ".." can climb,
			// and the walk goes on lexically.
			resolved = append(resolved, c)
			continue
		}
		if hops++; hops > maxLinkHops {
			return refuse(fmt.Sprintf("passes through more than %d links", maxLinkHops))
		}
		next := splitLink(strings.Join(resolved, "/"), target)
		if next == nil {
			return refuse(fmt.Sprintf("passes through %s, which is absolute", events.Excerpt(here)))
		}
		resolved = nil
		pending = append(next, pending...)
	}
	return nil
}

// splitLink is the components of target seen from directory dir (relative to the root), starting at
// the root; nil when target is absolute.
func splitLink(dir, target string) []string {
	if strings.HasPrefix(target, "/") {
		return nil
	}
	var out []string
	if dir != "" && dir != "." {
		out = strings.Split(dir, "/")
	}
	return append(out, strings.Split(target, "/")...)
}
