package checkout

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

const (
	// workspaceBranch is the branch a workspace's HEAD points to.
	workspaceBranch = plumbing.ReferenceName("refs/heads/cimdeploy")
	// workspaceMarker, a file in a workspace's .git, marks a directory Prune may remove; its
	// modification time is when the checkout started.
	workspaceMarker = "cimdeploy-workspace"
)

// Workspace is one commit checked out for one run: a git work tree whose .git holds only that commit
// and its tree, marked shallow (unless it is a root commit), on the branch "cimdeploy". Every file of
// the commit is tracked and the tree is clean, so `nix flake check <Dir>` sees all of it and sets
// self.rev and self.lastModified from the commit (checked with Nix 2.8); Nix finds the repository
// shallow and leaves self.revCount unset. Editing a file makes the tree dirty to Nix: no self.rev.
// Submodules are not checked out.
//
// A Workspace does not depend on the Cache: it stays valid while the cache is fetching. Close removes
// it; Close is idempotent and safe for concurrent use.
type Workspace struct {
	Dir     string    // the work tree
	Commit  string    // full commit id
	Ref     string    // the ref the revision named (refs/heads/main), empty for a commit id
	Time    time.Time // committer time
	Message string    // full commit message
	Author  string    // "Name <email>"

	repo      *git.Repository // until writeTree is done
	closeOnce sync.Once
	closeErr  error
}

// Close removes the workspace directory.
func (w *Workspace) Close() error {
	w.closeOnce.Do(func() {
		if err := os.RemoveAll(w.Dir); err != nil {
			w.closeErr = fmt.Errorf("checkout: remove workspace %s: %w", w.Dir, err)
		}
	})
	return w.closeErr
}

// newWorkspace makes the directory and its .git with commit's objects copied from src into one pack.
// The work tree is written by writeTree, which no longer needs src.
func newWorkspace(ctx context.Context, src storer.EncodedObjectStorer, commit *object.Commit, ref, parent string) (_ *Workspace, err error) {
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("checkout: create workspace parent: %w", err)
	}
	dir, err := os.MkdirTemp(parent, commit.Hash.String()[:12]+"-")
	if err != nil {
		return nil, fmt.Errorf("checkout: create workspace: %w", err)
	}
	ws := &Workspace{
		Dir:     dir,
		Commit:  commit.Hash.String(),
		Ref:     ref,
		Time:    commit.Committer.When,
		Message: commit.Message,
		Author:  fmt.Sprintf("%s <%s>", commit.Author.Name, commit.Author.Email),
	}
	defer func() {
		if err != nil {
			if ws.repo != nil {
				closeRepo(ws.repo)
			}
			err = errors.Join(err, ws.Close())
		}
	}()
	fail := func(what string, err error) (*Workspace, error) {
		return nil, fmt.Errorf("checkout: workspace %s: %s: %w", dir, what, err)
	}

	gitDir := filepath.Join(dir, git.GitDirName)
	if err := os.Mkdir(gitDir, 0o755); err != nil {
		return fail("create .git", err)
	}
	if err := os.WriteFile(filepath.Join(gitDir, workspaceMarker), []byte(ws.Commit+"\n"), 0o644); err != nil {
		return fail("write marker", err)
	}
	repo, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{InitOptions: git.InitOptions{DefaultBranch: workspaceBranch}})
	if err != nil {
		return fail("init", err)
	}
	ws.repo = repo

	hashes, err := commitObjects(ctx, src, commit)
	if err != nil {
		return fail("list objects", err)
	}
	pw, ok := repo.Storer.(storer.PackfileWriter)
	if !ok {
		return fail("write objects", errors.ErrUnsupported)
	}
	w, err := pw.PackfileWriter()
	if err != nil {
		return fail("write objects", err)
	}
	if _, err := packfile.NewEncoder(w, src, false).Encode(hashes, 0); err != nil {
		return fail("write objects", errors.Join(err, w.Close()))
	}
	if err := w.Close(); err != nil {
		return fail("write objects", err)
	}
	if len(commit.ParentHashes) > 0 {
		if err := repo.Storer.SetShallow([]plumbing.Hash{commit.Hash}); err != nil {
			return fail("mark shallow", err)
		}
	}
	if err := repo.Storer.SetReference(plumbing.NewHashReference(workspaceBranch, commit.Hash)); err != nil {
		return fail("set branch", err)
	}
	return ws, nil
}

// writeTree writes the commit's files and the index, so git (and Nix) see a clean work tree.
func (w *Workspace) writeTree() error {
	defer func() {
		closeRepo(w.repo)
		w.repo = nil
	}()
	wt, err := w.repo.Worktree()
	if err != nil {
		return fmt.Errorf("checkout: workspace %s: %w", w.Dir, err)
	}
	if err := wt.Reset(&git.ResetOptions{Commit: plumbing.NewHash(w.Commit), Mode: git.HardReset}); err != nil {
		return fmt.Errorf("checkout: workspace %s: write files: %w", w.Dir, err)
	}
	return nil
}

// commitObjects lists the commit, its trees and its blobs; not its history, not submodule commits.
func commitObjects(ctx context.Context, s storer.EncodedObjectStorer, commit *object.Commit) ([]plumbing.Hash, error) {
	hashes := []plumbing.Hash{commit.Hash}
	seen := map[plumbing.Hash]bool{}
	var walkTree func(h plumbing.Hash) error
	walkTree = func(h plumbing.Hash) error {
		if seen[h] {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		seen[h] = true
		hashes = append(hashes, h)
		t, err := object.GetTree(s, h)
		if err != nil {
			return fmt.Errorf("tree %s: %w", h, err)
		}
		for _, e := range t.Entries {
			switch e.Mode {
			case filemode.Dir:
				if err := walkTree(e.Hash); err != nil {
					return err
				}
			case filemode.Submodule:
			default:
				if !seen[e.Hash] {
					seen[e.Hash] = true
					hashes = append(hashes, e.Hash)
				}
			}
		}
		return nil
	}
	return hashes, walkTree(commit.TreeHash)
}

// Prune removes the workspaces directly under parent whose checkout started more than maxAge ago:
// those left by crashed runs. Only directories Checkout made (marked in their .git) are touched;
// maxAge must be longer than any run, since a workspace still in use looks the same. A missing
// parent is not an error. It returns the directories removed.
func (c *Cache) Prune(ctx context.Context, parent string, maxAge time.Duration) ([]string, error) {
	entries, err := os.ReadDir(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkout: prune workspaces in %s: %w", parent, err)
	}
	cutoff := time.Now().Add(-maxAge)
	var removed []string
	var errs []error
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("checkout: prune workspaces in %s: %w", parent, err)
		}
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		fi, err := os.Stat(filepath.Join(dir, git.GitDirName, workspaceMarker))
		if err != nil || fi.ModTime().After(cutoff) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("checkout: prune workspace %s: %w", dir, err))
			continue
		}
		c.logger().Info("pruned stale workspace", "dir", dir, "started", fi.ModTime())
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}
