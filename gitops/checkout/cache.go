package checkout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
)

// ErrNotFound is wrapped by the errors for a branch, tag or commit the remote does not have.
var ErrNotFound = errors.New("not found")

const (
	// tipDepth is the depth of the first fetch into an empty clone: the commit and its tree, no history.
	tipDepth = 1
	// unshallowDepth is git's INFINITE_DEPTH, what `git fetch --unshallow` asks for.
	unshallowDepth = 1<<31 - 1
	// commitRefs is where a commit fetched by id is kept in the clone, so it stays referenced.
	commitRefs = "refs/cimdeploy/commits/"
)

// Cache keeps one bare clone per repository under Dir, so that checking out a new commit fetches only
// the objects the clone lacks. The first fetch into a clone is shallow (depth 1) when the remote
// supports it; later fetches bring everything since, so the clone holds the history from its first
// commit on. It is deepened to full history when IsAncestor walks past that edge, or when a commit or
// tree needs objects from below it.
//
// Layout: Dir/repos/<hash>.git is the clone and Dir/repos/<hash>.lock its lock, where <hash> is a
// SHA-256 of the normalised URL (local paths made absolute, host lowercased, default port and ".git"
// dropped), never the raw URL. https and ssh URLs of one repository get separate clones.
//
// A Cache is safe for concurrent use. Operations on one repository are serialised by an in-process
// lock and a flock(2) on its lock file, so several processes (two CLIs, a server and a CLI) can share
// Dir; operations on different repositories run in parallel. A clone that cannot be opened is
// removed and cloned again. A Cache must not be copied after first use.
type Cache struct {
	Dir    string       // required
	Logger *slog.Logger // nil discards
	// Limits bound a commit's tree; a tree over them, or one whose symlinks leave it, is refused
	// before anything is written (see checkTree).
	Limits Limits

	mu    sync.Mutex
	locks map[string]chan struct{} // per cache key, a one-slot semaphore
}

func (c *Cache) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// RepoDir says where src's clone lives (it may not exist yet), for operators and tests.
func (c *Cache) RepoDir(src Source) (string, error) {
	ep, err := src.endpoint()
	if err != nil {
		return "", err
	}
	return c.repoDir(ep), nil
}

func (c *Cache) repoDir(ep endpoint) string {
	return filepath.Join(c.Dir, "repos", ep.cacheKey()+".git")
}

// Resolve returns the commit id rev names on the remote now. A full commit id is checked and returned
// in lowercase without contacting the remote (Checkout reports one the remote lacks); a branch or ref
// name is looked up in the remote's advertisement, an annotated tag peeled to its commit, without
// touching the clone. An expression (HEAD~1, main^, v1.2^{}, an abbreviated commit id; see
// ValidateRev) is resolved against the cached clone, which first fetches what it lacks: the base's
// commit, and all branches and tags with their history when the expression walks to ancestors or
// abbreviates an id. A revision the remote does not have is an error wrapping ErrNotFound; an invalid
// one is a *RevError; an abbreviated id that more than one commit starts with is an error naming them.
func (c *Cache) Resolve(ctx context.Context, src Source, rev string) (string, error) {
	ep, err := src.endpoint()
	if err != nil {
		return "", err
	}
	r, err := parseRev(rev)
	if err != nil {
		return "", err
	}
	if r.commit != "" {
		return r.commit, nil
	}
	auth, err := src.auth(ep)
	if err != nil {
		return "", err
	}
	if r.expr != nil {
		log := c.logger().With("repo", src, "rev", r.String())
		unlock, err := c.lock(ctx, ep)
		if err != nil {
			return "", err
		}
		defer unlock()
		repo, err := c.open(ep, log)
		if err != nil {
			return "", err
		}
		defer closeRepo(repo)
		h, err := c.resolveExpr(ctx, log, repo, src, ep, auth, r.expr)
		if err != nil {
			return "", err
		}
		return h.String(), nil
	}
	ad, err := advertise(ctx, src, ep, auth)
	if err != nil {
		return "", err
	}
	h, ok := ad.commitOf(plumbing.ReferenceName(r.ref))
	if !ok {
		return "", fmt.Errorf("checkout: %s in %s: %w", r.ref, src.URL, ErrNotFound)
	}
	return h.String(), nil
}

// Checkout fetches the commit rev names into the cached clone of src (only the objects the clone
// lacks) and writes it into a new workspace directory under parent, which is created if needed. Each
// call makes its own workspace (parent/<commit[:12]>-<random>), so concurrent checkouts of one commit
// do not collide; the caller owns it and must Close it. On error nothing is left under parent.
//
// rev is a full commit id, a branch name, a full ref name or an expression (see ValidateRev and
// Resolve; the workspace then has no ref, like a commit id's). A ref is fetched by
// name. A commit id is fetched by the ref whose tip it is, else by id where the remote allows it,
// else by fetching all branches and tags with full history; one not found is an error wrapping
// ErrNotFound. The workspace always holds the complete tree of the commit, and only it: a tree that
// could reach outside the workspace (a symlink leaving it) or is over c.Limits is refused with an
// error wrapping ErrUnsafeTree that names the path; submodules are not fetched.
func (c *Cache) Checkout(ctx context.Context, src Source, rev string, parent string) (*Workspace, error) {
	ep, err := src.endpoint()
	if err != nil {
		return nil, err
	}
	r, err := parseRev(rev)
	if err != nil {
		return nil, err
	}
	if parent == "" {
		return nil, errors.New("checkout: no parent directory for the workspace")
	}
	auth, err := src.auth(ep)
	if err != nil {
		return nil, err
	}
	log := c.logger().With("repo", src, "rev", r.String())
	start := time.Now()

	unlock, err := c.lock(ctx, ep)
	if err != nil {
		return nil, err
	}
	unlock = sync.OnceFunc(unlock)
	defer unlock()
	repo, err := c.open(ep, log)
	if err != nil {
		return nil, err
	}
	defer closeRepo(repo)

	h, err := c.ensure(ctx, log, repo, src, ep, auth, r)
	if err != nil {
		return nil, err
	}
	commit, err := object.GetCommit(repo.Storer, h)
	if err != nil {
		return nil, fmt.Errorf("checkout: read commit %s of %s: %w", h, src.URL, err)
	}
	if err := checkTree(ctx, repo.Storer, commit, c.Limits); err != nil {
		return nil, err
	}
	ws, err := newWorkspace(ctx, repo.Storer, commit, r.ref, parent)
	if err != nil {
		return nil, err
	}
	unlock() // the workspace has its own copy of the objects
	if err := ws.writeTree(); err != nil {
		return nil, errors.Join(err, ws.Close())
	}
	log.Info("checked out", "commit", ws.Commit, "dir", ws.Dir, "duration", time.Since(start))
	return ws, nil
}

// IsAncestor reports whether ancestor is descendant or one of its ancestors. Both must be full commit
// ids. descendant is fetched if the clone lacks it; when the walk from it reaches the edge of a
// shallow clone, the clone is deepened to full history once and the walk repeated. An ancestor the
// remote no longer has (say, after a force push) is simply not found: the answer is false.
func (c *Cache) IsAncestor(ctx context.Context, src Source, ancestor, descendant string) (bool, error) {
	ep, err := src.endpoint()
	if err != nil {
		return false, err
	}
	a, err := parseCommit(ancestor)
	if err != nil {
		return false, err
	}
	d, err := parseCommit(descendant)
	if err != nil {
		return false, err
	}
	auth, err := src.auth(ep)
	if err != nil {
		return false, err
	}
	log := c.logger().With("repo", src, "ancestor", a, "descendant", d)

	unlock, err := c.lock(ctx, ep)
	if err != nil {
		return false, err
	}
	defer unlock()
	repo, err := c.open(ep, log)
	if err != nil {
		return false, err
	}
	defer closeRepo(repo)

	dh, err := c.ensure(ctx, log, repo, src, ep, auth, rev{commit: d})
	if err != nil {
		return false, err
	}
	ah := plumbing.NewHash(a)
	found, incomplete, err := walk(ctx, repo, dh, ah)
	if err != nil || found || !incomplete {
		return found, err
	}

	log.Info("deepening shallow clone: the history walk reached its shallow edge")
	ad, err := advertise(ctx, src, ep, auth)
	if err != nil {
		return false, err
	}
	if err := c.deepen(ctx, log, repo, src, ep, auth, historySpecs(ad.tipsAt(dh))); err != nil {
		return false, err
	}
	found, incomplete, err = walk(ctx, repo, dh, ah)
	if err == nil && !found && incomplete {
		err = fmt.Errorf("checkout: history of %s in %s is still incomplete after deepening the clone", d, src.URL)
	}
	return found, err
}

func parseCommit(s string) (string, error) {
	r, err := parseRev(s)
	if err != nil {
		return "", err
	}
	if r.commit == "" {
		return "", &RevError{Rev: s, Reason: "a full 40-hex commit id is needed here"}
	}
	return r.commit, nil
}

// walk searches the history of from for target. incomplete says the walk met a commit whose parents
// the clone lacks (the edge of a shallow fetch), so a false found is not final.
func walk(ctx context.Context, repo *git.Repository, from, target plumbing.Hash) (found, incomplete bool, err error) {
	seen := map[plumbing.Hash]bool{from: true}
	queue := []plumbing.Hash{from}
	for n := 0; len(queue) > 0; n++ {
		if n%256 == 0 && ctx.Err() != nil {
			return false, false, fmt.Errorf("checkout: walk history of %s: %w", from, ctx.Err())
		}
		h := queue[0]
		queue = queue[1:]
		if h == target {
			return true, false, nil
		}
		c, err := object.GetCommit(repo.Storer, h)
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			incomplete = true
			continue
		}
		if err != nil {
			return false, false, fmt.Errorf("checkout: walk history of %s: read %s: %w", from, h, err)
		}
		for _, p := range c.ParentHashes {
			if !seen[p] {
				seen[p] = true
				queue = append(queue, p)
			}
		}
	}
	return false, incomplete, nil
}

// ensure makes the clone hold the commit r names with its whole tree and returns its id. It fetches
// only when the clone lacks them, and deepens a shallow clone when an incremental fetch could not
// complete the tree or the commit lies below the shallow edge.
func (c *Cache) ensure(ctx context.Context, log *slog.Logger, repo *git.Repository, src Source, ep endpoint, auth transport.AuthMethod, r rev) (plumbing.Hash, error) {
	if r.expr != nil {
		h, err := c.resolveExpr(ctx, log, repo, src, ep, auth, r.expr)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		return c.ensureCommit(ctx, log, repo, src, ep, auth, h)
	}
	if r.commit != "" {
		return c.ensureCommit(ctx, log, repo, src, ep, auth, plumbing.NewHash(r.commit))
	}
	name := plumbing.ReferenceName(r.ref)
	ad, err := advertise(ctx, src, ep, auth)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	h, ok := ad.commitOf(name)
	if !ok {
		return plumbing.ZeroHash, fmt.Errorf("checkout: %s in %s: %w", name, src.URL, ErrNotFound)
	}
	if complete(repo, h) {
		log.Debug("commit already in the clone", "commit", h)
		return h, nil
	}
	spec := []config.RefSpec{mirror(name)}
	if err := c.fetch(ctx, log, repo, src, ep, auth, spec, depthFor(repo, ad)); err != nil {
		return plumbing.ZeroHash, err
	}
	// The ref may have moved since the advertisement: take what the fetch got.
	h, err = localCommit(repo, name)
	if (err != nil || !complete(repo, h)) && isShallow(repo) {
		log.Info("deepening shallow clone: the fetched commit needs objects below its shallow edge", "commit", h)
		if err := c.deepen(ctx, log, repo, src, ep, auth, spec); err != nil {
			return plumbing.ZeroHash, err
		}
		h, err = localCommit(repo, name)
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("checkout: %s of %s after fetch: %w", name, src.URL, err)
	}
	if !complete(repo, h) {
		return plumbing.ZeroHash, fmt.Errorf("checkout: %s of %s: the fetch left commit %s incomplete", name, src.URL, h)
	}
	return h, nil
}

func (c *Cache) ensureCommit(ctx context.Context, log *slog.Logger, repo *git.Repository, src Source, ep endpoint, auth transport.AuthMethod, h plumbing.Hash) (plumbing.Hash, error) {
	if complete(repo, h) {
		log.Debug("commit already in the clone", "commit", h)
		return h, nil
	}
	ad, err := advertise(ctx, src, ep, auth)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	tips := ad.tipsAt(h)
	switch {
	case len(tips) > 0:
		if err := c.fetch(ctx, log, repo, src, ep, auth, []config.RefSpec{mirror(tips[0])}, depthFor(repo, ad)); err != nil {
			return plumbing.ZeroHash, err
		}
	case ad.caps.Supports(capability.AllowReachableSHA1InWant):
		spec := config.RefSpec(h.String() + ":" + commitRefs + h.String())
		if err := c.fetch(ctx, log, repo, src, ep, auth, []config.RefSpec{spec}, depthFor(repo, ad)); err != nil {
			log.Debug("fetch by commit id failed; fetching all branches and tags", "err", err)
		}
	}
	if !complete(repo, h) {
		// No tip, or the commit (or part of its tree) lies below the shallow edge: fetch all history.
		specs := historySpecs(tips)
		var err error
		if isShallow(repo) {
			log.Info("deepening shallow clone: the commit is no ref's tip or lies below the shallow edge", "commit", h)
			err = c.deepen(ctx, log, repo, src, ep, auth, specs)
		} else {
			err = c.fetch(ctx, log, repo, src, ep, auth, specs, 0)
		}
		if err != nil {
			return plumbing.ZeroHash, err
		}
	}
	switch {
	case !hasCommit(repo, h):
		return plumbing.ZeroHash, fmt.Errorf("checkout: commit %s in %s: %w (no branch or tag of the remote reaches it)", h, src.URL, ErrNotFound)
	case !complete(repo, h):
		return plumbing.ZeroHash, fmt.Errorf("checkout: commit %s of %s: the fetch left its tree incomplete", h, src.URL)
	}
	return h, nil
}

// fetch runs one fetch into the clone and then drops the shallow marks of commits whose parents the
// clone now has.
func (c *Cache) fetch(ctx context.Context, log *slog.Logger, repo *git.Repository, src Source, ep endpoint, auth transport.AuthMethod, specs []config.RefSpec, depth int) error {
	start := time.Now()
	remote := git.NewRemote(repo.Storer, &config.RemoteConfig{Name: "origin", URLs: []string{ep.url}})
	err := remote.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs:   specs,
		Depth:      depth,
		Auth:       auth,
		Tags:       git.NoTags,
		Force:      true,
	})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		err = nil
	}
	if err != nil {
		return src.redact(fmt.Errorf("checkout: fetch %v from %s: %w", specs, src.URL, err))
	}
	if err := trimShallow(repo); err != nil {
		return fmt.Errorf("checkout: clone of %s: %w", src.URL, err)
	}
	log.Debug("fetched", "refspecs", specs, "depth", depth, "shallow", isShallow(repo), "duration", time.Since(start))
	return nil
}

// deepen fetches specs with full history into a shallow clone. It first marks as shallow every commit
// whose parents the clone lacks: full-depth fetches send no shallow lines, so the remote may have left
// out commits below the edge that a merge reaches, and only the commits the remote is told are shallow
// get their history sent.
func (c *Cache) deepen(ctx context.Context, log *slog.Logger, repo *git.Repository, src Source, ep endpoint, auth transport.AuthMethod, specs []config.RefSpec) error {
	if err := markEdges(ctx, repo); err != nil {
		return fmt.Errorf("checkout: clone of %s: %w", src.URL, err)
	}
	return c.fetch(ctx, log, repo, src, ep, auth, specs, unshallowDepth)
}

// markEdges adds to the shallow list the commits reachable from the clone's refs whose parents the
// clone lacks.
func markEdges(ctx context.Context, repo *git.Repository) error {
	shallows, err := repo.Storer.Shallow()
	if err != nil {
		return fmt.Errorf("read shallow list: %w", err)
	}
	marked := map[plumbing.Hash]bool{}
	for _, h := range shallows {
		marked[h] = true
	}
	refs, err := repo.Storer.IterReferences()
	if err != nil {
		return fmt.Errorf("list refs: %w", err)
	}
	var queue []plumbing.Hash
	_ = refs.ForEach(func(r *plumbing.Reference) error {
		if r.Type() == plumbing.HashReference {
			if h, err := peel(repo, r.Hash()); err == nil {
				queue = append(queue, h)
			}
		}
		return nil
	})
	seen := map[plumbing.Hash]bool{}
	added := false
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		h := queue[0]
		queue = queue[1:]
		if seen[h] || marked[h] {
			continue
		}
		seen[h] = true
		c, err := object.GetCommit(repo.Storer, h)
		if err != nil {
			continue
		}
		for _, p := range c.ParentHashes {
			if repo.Storer.HasEncodedObject(p) != nil {
				if !marked[h] {
					marked[h] = true
					shallows = append(shallows, h)
					added = true
				}
				continue
			}
			queue = append(queue, p)
		}
	}
	if !added {
		return nil
	}
	if err := repo.Storer.SetShallow(shallows); err != nil {
		return fmt.Errorf("update shallow list: %w", err)
	}
	return nil
}

// depthFor is the depth of a fetch: 1 for the first fetch into an empty clone when the remote supports
// shallow fetches; full (0) otherwise. A full-depth fetch into a shallow clone sends no shallow lines,
// so the remote sends what the clone's refs lack, as into a full clone: only new objects, and all the
// commits since the last fetch. (A depth-1 fetch would resend the whole tree each time: go-git cannot
// take thin packs, and git-upload-pack leaves out the objects of the last fetch only for thin packs.)
// The remote assumes the clone has the history of its refs, so a tree can come incomplete; ensure
// checks and deepens then.
func depthFor(repo *git.Repository, ad *remoteRefs) int {
	if ad.caps.Supports(capability.Shallow) && isEmpty(repo) {
		return tipDepth
	}
	return 0
}

// trimShallow unmarks shallow commits whose parents are all in the clone: go-git appends to the
// shallow list but never removes from it, not even when deepening.
func trimShallow(repo *git.Repository) error {
	shallows, err := repo.Storer.Shallow()
	if err != nil || len(shallows) == 0 {
		return err
	}
	var keep []plumbing.Hash
	for _, h := range shallows {
		c, err := object.GetCommit(repo.Storer, h)
		if err != nil {
			keep = append(keep, h)
			continue
		}
		for _, p := range c.ParentHashes {
			if repo.Storer.HasEncodedObject(p) != nil {
				keep = append(keep, h)
				break
			}
		}
	}
	if len(keep) == len(shallows) {
		return nil
	}
	if err := repo.Storer.SetShallow(keep); err != nil {
		return fmt.Errorf("update shallow list: %w", err)
	}
	return nil
}

func isShallow(repo *git.Repository) bool {
	s, err := repo.Storer.Shallow()
	return err == nil && len(s) > 0
}

func isEmpty(repo *git.Repository) bool {
	iter, err := repo.Storer.IterReferences()
	if err != nil {
		return true
	}
	defer iter.Close()
	empty := true
	_ = iter.ForEach(func(r *plumbing.Reference) error {
		if r.Type() == plumbing.HashReference {
			empty = false
			return io.EOF
		}
		return nil
	})
	return empty
}

// localCommit is the commit a ref of the clone names.
func localCommit(repo *git.Repository, name plumbing.ReferenceName) (plumbing.Hash, error) {
	ref, err := repo.Storer.Reference(name)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return peel(repo, ref.Hash())
}

// complete says whether the clone has commit h and every tree and blob of it (submodules aside).
func complete(repo *git.Repository, h plumbing.Hash) bool {
	c, err := object.GetCommit(repo.Storer, h)
	if err != nil {
		return false
	}
	seen := map[plumbing.Hash]bool{}
	var tree func(h plumbing.Hash) bool
	tree = func(h plumbing.Hash) bool {
		if seen[h] {
			return true
		}
		seen[h] = true
		t, err := object.GetTree(repo.Storer, h)
		if err != nil {
			return false
		}
		for _, e := range t.Entries {
			switch e.Mode {
			case filemode.Dir:
				if !tree(e.Hash) {
					return false
				}
			case filemode.Submodule:
			default:
				if !seen[e.Hash] && repo.Storer.HasEncodedObject(e.Hash) != nil {
					return false
				}
				seen[e.Hash] = true
			}
		}
		return true
	}
	return tree(c.TreeHash)
}

func hasCommit(repo *git.Repository, h plumbing.Hash) bool {
	_, err := object.GetCommit(repo.Storer, h)
	return err == nil
}

// peel follows annotated tags to the commit they name.
func peel(repo *git.Repository, h plumbing.Hash) (plumbing.Hash, error) {
	for range 10 {
		obj, err := repo.Storer.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("checkout: read object %s: %w", h, err)
		}
		switch obj.Type() {
		case plumbing.CommitObject:
			return h, nil
		case plumbing.TagObject:
			tag, err := object.DecodeTag(repo.Storer, obj)
			if err != nil {
				return plumbing.ZeroHash, fmt.Errorf("checkout: read tag %s: %w", h, err)
			}
			h = tag.Target
		default:
			return plumbing.ZeroHash, fmt.Errorf("checkout: %s is a %s, not a commit", h, obj.Type())
		}
	}
	return plumbing.ZeroHash, fmt.Errorf("checkout: tag chain at %s too long", h)
}

// historySpecs is what a search for a commit, or a deepening, fetches: all branches and tags, and the
// other refs (pull requests) among tips.
func historySpecs(tips []plumbing.ReferenceName) []config.RefSpec {
	specs := []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}
	for _, name := range tips {
		if !name.IsBranch() && !name.IsTag() {
			specs = append(specs, mirror(name))
		}
	}
	return specs
}

// mirror fetches a remote ref into the same name in the clone.
func mirror(name plumbing.ReferenceName) config.RefSpec {
	return config.RefSpec("+" + name.String() + ":" + name.String())
}

// remoteRefs is a remote's ref advertisement.
type remoteRefs struct {
	refs   map[plumbing.ReferenceName]plumbing.Hash
	peeled map[plumbing.ReferenceName]plumbing.Hash // annotated tags to their commits
	caps   *capability.List
}

func (a *remoteRefs) commitOf(name plumbing.ReferenceName) (plumbing.Hash, bool) {
	if h, ok := a.peeled[name]; ok {
		return h, true
	}
	h, ok := a.refs[name]
	return h, ok
}

// tipsAt lists the refs whose commit is h: branches first, then tags, then the rest, each sorted.
func (a *remoteRefs) tipsAt(h plumbing.Hash) []plumbing.ReferenceName {
	var names []plumbing.ReferenceName
	for name := range a.refs {
		if c, _ := a.commitOf(name); c == h && name != plumbing.HEAD {
			names = append(names, name)
		}
	}
	rank := func(n plumbing.ReferenceName) int {
		switch {
		case n.IsBranch():
			return 0
		case n.IsTag():
			return 1
		}
		return 2
	}
	slices.SortFunc(names, func(x, y plumbing.ReferenceName) int {
		if d := rank(x) - rank(y); d != 0 {
			return d
		}
		return strings.Compare(x.String(), y.String())
	})
	return names
}

// advertise lists the remote's refs and capabilities (git ls-remote).
func advertise(ctx context.Context, src Source, ep endpoint, auth transport.AuthMethod) (*remoteRefs, error) {
	fail := func(err error) (*remoteRefs, error) {
		return nil, src.redact(fmt.Errorf("checkout: list refs of %s: %w", src.URL, err))
	}
	tep, err := transport.NewEndpoint(ep.url)
	if err != nil {
		return fail(err)
	}
	cl, err := client.NewClient(tep)
	if err != nil {
		return fail(err)
	}
	sess, err := cl.NewUploadPackSession(tep, auth)
	if err != nil {
		return fail(err)
	}
	defer sess.Close()
	ar, err := sess.AdvertisedReferencesContext(ctx)
	out := &remoteRefs{
		refs:   map[plumbing.ReferenceName]plumbing.Hash{},
		peeled: map[plumbing.ReferenceName]plumbing.Hash{},
		caps:   capability.NewList(),
	}
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return out, nil
	}
	if err != nil {
		return fail(err)
	}
	for name, h := range ar.References {
		out.refs[plumbing.ReferenceName(name)] = h
	}
	if ar.Head != nil { // the remote's HEAD, its default branch (HEAD~1 and the like start from it)
		out.refs[plumbing.HEAD] = *ar.Head
	}
	for name, h := range ar.Peeled {
		out.peeled[plumbing.ReferenceName(name)] = h
	}
	if ar.Capabilities != nil {
		out.caps = ar.Capabilities
	}
	return out, nil
}

// lock takes the repository's in-process lock, then its lock file; both wait until ctx ends.
func (c *Cache) lock(ctx context.Context, ep endpoint) (unlock func(), err error) {
	if c.Dir == "" {
		return nil, errors.New("checkout: cache has no directory")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("checkout: wait for the clone of %s: %w", ep.key, err)
	}
	key := ep.cacheKey()
	c.mu.Lock()
	if c.locks == nil {
		c.locks = map[string]chan struct{}{}
	}
	sem, ok := c.locks[key]
	if !ok {
		sem = make(chan struct{}, 1)
		c.locks[key] = sem
	}
	c.mu.Unlock()

	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("checkout: wait for the clone of %s: %w", ep.key, ctx.Err())
	}
	dir := filepath.Join(c.Dir, "repos")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		<-sem
		return nil, fmt.Errorf("checkout: create cache directory: %w", err)
	}
	unlockFile, err := lockFile(ctx, filepath.Join(dir, key+".lock"))
	if err != nil {
		<-sem
		return nil, err
	}
	return func() {
		unlockFile()
		<-sem
	}, nil
}

// open opens the clone, creating it, or creating it again when it cannot be read. The caller holds
// the lock.
func (c *Cache) open(ep endpoint, log *slog.Logger) (*git.Repository, error) {
	dir := c.repoDir(ep)
	repo, err := git.PlainOpen(dir)
	switch {
	case err == nil:
		return repo, nil
	case errors.Is(err, git.ErrRepositoryNotExists):
	default:
		log.Warn("cached clone unreadable; cloning again", "dir", dir, "err", err)
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("checkout: remove broken clone %s: %w", dir, err)
		}
	}
	repo, err = git.PlainInit(dir, true)
	if err != nil {
		return nil, fmt.Errorf("checkout: create clone %s: %w", dir, err)
	}
	return repo, nil
}

func closeRepo(repo *git.Repository) {
	if c, ok := repo.Storer.(io.Closer); ok {
		_ = c.Close()
	}
}
