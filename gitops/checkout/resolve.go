package checkout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// shownCandidates bounds the commits an ambiguous abbreviated id error names.
const shownCandidates = 5

// resolveExpr resolves e to a commit of the clone, fetching what the clone lacks: the base's commit,
// and all branches and tags with full history when e abbreviates an id or walks to ancestors. The
// caller holds the clone's lock.
func (c *Cache) resolveExpr(ctx context.Context, log *slog.Logger, repo *git.Repository, src Source, ep endpoint, auth transport.AuthMethod, e *revExpr) (plumbing.Hash, error) {
	ad, err := advertise(ctx, src, ep, auth)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	var h plumbing.Hash
	switch {
	case e.commit != "":
		h, err = c.ensureCommit(ctx, log, repo, src, ep, auth, plumbing.NewHash(e.commit))
	case e.prefix != "":
		if err := c.fetchHistory(ctx, log, repo, src, ep, auth, nil); err != nil {
			return plumbing.ZeroHash, err
		}
		h, err = findPrefix(ctx, repo, src, e)
	case e.head:
		head, ok := ad.commitOf(plumbing.HEAD)
		if !ok {
			return plumbing.ZeroHash, fmt.Errorf("checkout: %s: %s advertises no HEAD: %w", e.text, src.URL, ErrNotFound)
		}
		h, err = c.ensureCommit(ctx, log, repo, src, ep, auth, head)
	default:
		var name plumbing.ReferenceName
		if name, err = lookupName(log, ad, src, e); err == nil {
			h, err = c.ensure(ctx, log, repo, src, ep, auth, rev{ref: name.String()})
		}
	}
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if walksHistory(e) && isShallow(repo) {
		log.Info("deepening shallow clone: the revision walks to ancestors", "commit", h)
		if err := c.fetchHistory(ctx, log, repo, src, ep, auth, ad.tipsAt(h)); err != nil {
			return plumbing.ZeroHash, err
		}
	}
	base := h
	for _, st := range e.steps {
		if h, err = step(ctx, repo, h, st); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("checkout: %s (from %s) in %s: %w", e.text, base, src.URL, err)
		}
	}
	log.Info("revision resolved", "commit", h)
	return h, nil
}

// walksHistory reports whether e goes from its base to an ancestor.
func walksHistory(e *revExpr) bool {
	for _, st := range e.steps {
		if st.op != 'p' && st.n > 0 {
			return true
		}
	}
	return false
}

// fetchHistory fetches every branch and tag (and the other refs among tips) with full history.
func (c *Cache) fetchHistory(ctx context.Context, log *slog.Logger, repo *git.Repository, src Source, ep endpoint, auth transport.AuthMethod, tips []plumbing.ReferenceName) error {
	if isShallow(repo) {
		return c.deepen(ctx, log, repo, src, ep, auth, historySpecs(tips))
	}
	return c.fetch(ctx, log, repo, src, ep, auth, historySpecs(tips), 0)
}

// lookupName finds the ref a short name with suffixes means, in git's order (gitrevisions(7)): a tag
// before a branch of the same name, which is logged as ambiguous.
func lookupName(log *slog.Logger, ad *remoteRefs, src Source, e *revExpr) (plumbing.ReferenceName, error) {
	tag, branch := plumbing.NewTagReferenceName(e.name), plumbing.NewBranchReferenceName(e.name)
	_, isTag := ad.commitOf(tag)
	_, isBranch := ad.commitOf(branch)
	switch {
	case isTag && isBranch:
		log.Warn("revision names both a tag and a branch; taking the tag, as git does", "tag", tag, "branch", branch)
		return tag, nil
	case isTag:
		return tag, nil
	case isBranch:
		return branch, nil
	}
	return "", fmt.Errorf("checkout: %s: no branch or tag %q in %s: %w", e.text, e.name, src.URL, ErrNotFound)
}

// findPrefix is the one commit of the clone whose id starts with e.prefix.
func findPrefix(ctx context.Context, repo *git.Repository, src Source, e *revExpr) (plumbing.Hash, error) {
	iter, err := repo.Storer.IterEncodedObjects(plumbing.CommitObject)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("checkout: %s: list commits of the clone of %s: %w", e.text, src.URL, err)
	}
	defer iter.Close()
	var found []plumbing.Hash
	n := 0
	err = iter.ForEach(func(o plumbing.EncodedObject) error {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if h := o.Hash(); strings.HasPrefix(h.String(), e.prefix) {
			found = append(found, h)
			if len(found) > shownCandidates {
				return storer.ErrStop
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return plumbing.ZeroHash, fmt.Errorf("checkout: %s: search the clone of %s: %w", e.text, src.URL, err)
	case len(found) == 0:
		return plumbing.ZeroHash, fmt.Errorf("checkout: %s: no commit of the branches and tags of %s starts with %s: %w", e.text, src.URL, e.prefix, ErrNotFound)
	case len(found) > 1:
		names := make([]string, 0, shownCandidates)
		for _, h := range found[:min(len(found), shownCandidates)] {
			names = append(names, h.String())
		}
		more := ""
		if len(found) > shownCandidates {
			more = ", ..."
		}
		return plumbing.ZeroHash, fmt.Errorf("checkout: %s is ambiguous in %s: commits %s%s start with it; give more hex digits", e.text, src.URL, strings.Join(names, ", "), more)
	}
	return found[0], nil
}

// errNoParent is wrapped when a step goes past a root commit or names a parent a merge lacks.
var errNoParent = fmt.Errorf("no such parent: %w", ErrNotFound)

// step takes one suffix from h.
func step(ctx context.Context, repo *git.Repository, h plumbing.Hash, st revStep) (plumbing.Hash, error) {
	switch {
	case st.op == 'p':
		return peel(repo, h)
	case st.op == '^' && st.n == 0:
		return h, nil
	case st.op == '^':
		c, err := getCommit(repo, h)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if st.n > len(c.ParentHashes) {
			return plumbing.ZeroHash, fmt.Errorf("^%d: commit %s has %d parent(s): %w", st.n, h, len(c.ParentHashes), errNoParent)
		}
		return c.ParentHashes[st.n-1], nil
	}
	for i := range st.n {
		if i%256 == 255 && ctx.Err() != nil {
			return plumbing.ZeroHash, ctx.Err()
		}
		c, err := getCommit(repo, h)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if len(c.ParentHashes) == 0 {
			return plumbing.ZeroHash, fmt.Errorf("~%d: the history ends at root commit %s, %d commit(s) back: %w", st.n, h, i, errNoParent)
		}
		h = c.ParentHashes[0]
	}
	return h, nil
}

func getCommit(repo *git.Repository, h plumbing.Hash) (*object.Commit, error) {
	c, err := object.GetCommit(repo.Storer, h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return nil, fmt.Errorf("commit %s is not in the clone: %w", h, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", h, err)
	}
	return c, nil
}
