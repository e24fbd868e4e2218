package remote

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sync/errgroup"
)

// Fanned is what Fanout did.
type Fanned struct {
	Closure  int           `json:"closure"` // paths in the closure
	Sent     int64         `json:"sent"`    // bytes this process sent: the export stream of the first copy
	Copies   []FanCopy     `json:"copies"`  // one per node, in the order they got the closure
	Rounds   int           `json:"rounds"`  // node-to-node rounds after the first copy
	Duration time.Duration `json:"duration_ns"`
}

// FanCopy is how one node got the closure.
type FanCopy struct {
	Node     string        `json:"node"`
	From     string        `json:"from"`    // "" for the first copy (from the local store), else the node it fetched from
	Missing  int           `json:"missing"` // paths the node lacked
	Round    int           `json:"round"`   // 0: the first copy
	Duration time.Duration `json:"duration_ns"`
}

// Fanout copies the closures of paths from the local store to every node of nodes while sending them
// from here once: CopyClosure to the first node, then node to node, every node that has the closure
// fetching it into one that lacks it in each round, so the holders double per round (10 nodes: the
// first copy, then 4 rounds). A node fetches with nix copy --from ssh://root@<holder> (the
// nix-store --serve protocol, Nix 2.8 and newer) through the node's OpenSSH client.
//
// The nodes' trust in each other is made for the call and undone after it: a fresh ed25519 key, made
// in memory, whose public key is added to root's ~/.ssh/authorized_keys of every node with
// restrict,command="nix-store --serve" (so it can only read the store, never run a command or write),
// and whose private key a fetching node holds only in a private temporary directory for the
// duration of one fetch. The holder's host key is read over this process's pinned connection to it and
// given to the fetching node as its only known host (StrictHostKeyChecking yes). When the call ends
// (also on failure or cancellation) the key's line is removed from every node. Paths fetched are
// checked the same way as CopyClosure's: nix-store --check-validity on the node afterwards.
//
// Every node must be of the same Pool; a node that lacks nothing is skipped. Concurrent copies run
// under one errgroup per round; a failing fetch fails the call after the round's other fetches end.
func Fanout(ctx context.Context, nodes []*SSHNode, paths []string) (Fanned, error) {
	start := time.Now()
	var res Fanned
	err := fanout(ctx, nodes, paths, &res)
	res.Duration = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("fan out closure to %d nodes: %w", len(nodes), err)
	}
	if len(nodes) > 0 {
		nodes[0].pool.log.Info("closure fanned out", "nodes", len(nodes), "closure", res.Closure, "rounds", res.Rounds,
			"sent", res.Sent, "duration", res.Duration.Round(time.Millisecond))
	}
	return res, nil
}

func fanout(ctx context.Context, nodes []*SSHNode, paths []string, res *Fanned) (err error) {
	if len(nodes) == 0 {
		return nil
	}
	first, err := nodes[0].CopyClosure(ctx, paths)
	if err != nil {
		return err
	}
	res.Closure, res.Sent = first.Closure, first.Sent
	res.Copies = append(res.Copies, FanCopy{Node: nodes[0].name, Missing: len(first.Missing), Duration: first.Duration})
	if len(nodes) == 1 {
		return nil
	}
	closure, err := nodes[0].local.Closure(ctx, paths)
	if err != nil {
		return err
	}
	f, err := NewFan(ctx, nodes)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close(ctx)) }()
	have := []int{0}
	next := 1
	for round := 1; next < len(nodes); round++ {
		res.Rounds = round
		var mu sync.Mutex
		var got []int
		g, gctx := errgroup.WithContext(ctx)
		for _, from := range have {
			if next >= len(nodes) {
				break
			}
			to := next
			next++
			g.Go(func() error {
				start := time.Now()
				missing, err := f.fetch(gctx, nodes[to], nodes[from], closure, paths)
				mu.Lock()
				defer mu.Unlock()
				res.Copies = append(res.Copies, FanCopy{Node: nodes[to].name, From: nodes[from].name, Missing: len(missing),
					Round: round, Duration: time.Since(start)})
				got = append(got, to)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		have = append(have, got...)
	}
	return nil
}

// Fan lets nodes copy closures from each other, so that a closure many nodes need leaves this
// process once: Copy fetches what a node needs from a node that already holds it (node to node, over
// the nodes' own network), and only the rest from the local store. NewFan makes the nodes' trust in
// each other for the fan's lifetime and Close undoes it (see Fanout for the key, its restriction and
// the pinned host keys). Every path fetched is checked against the local store's NAR hash: a node
// that serves other contents under a path's name fails the fetch; the paths that arrived in a fetch
// that failed, for that or any reason, are deleted again, and the copy from here sends them. Safe
// for concurrent use; each holder serves one fetch at a time.
type Fan struct {
	nodes    []*SSHNode
	key      fanKey
	hostKeys map[*SSHNode]string

	mu      sync.Mutex
	holds   map[*SSHNode]map[string]bool // what each node is known to hold: the closures it got through Copy
	busy    map[*SSHNode]bool            // serving a fetch
	changed chan struct{}                // closed (and replaced) when holds or busy change
}

// NewFan authorizes a fresh key on every node of nodes (all of one Pool) and reads their host keys.
// On failure it takes the key away again.
func NewFan(ctx context.Context, nodes []*SSHNode) (*Fan, error) {
	for _, n := range nodes[1:] {
		if n.pool != nodes[0].pool {
			return nil, fmt.Errorf("%s: not of the first node's pool", n.name)
		}
	}
	key, err := newFanKey()
	if err != nil {
		return nil, err
	}
	f := &Fan{nodes: nodes, key: key, hostKeys: map[*SSHNode]string{}, holds: map[*SSHNode]map[string]bool{},
		busy: map[*SSHNode]bool{}, changed: make(chan struct{})}
	hostKeys := make([]string, len(nodes))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, n := range nodes {
		g.Go(func() error {
			if err := n.Run(gctx, Cmd{Argv: Script(authorizeScript, key.authorized), Step: "add the fan-out key"}); err != nil {
				return err
			}
			line, err := n.knownHostsLine(gctx)
			hostKeys[i] = line
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, errors.Join(err, f.Close(ctx))
	}
	for i, n := range nodes {
		f.hostKeys[n] = hostKeys[i]
	}
	return f, nil
}

// Close takes the fan's key away from every node (also when ctx is done: on a context of its own,
// bounded by the connect timeout and 30 s).
func (f *Fan) Close(ctx context.Context) error {
	if len(f.nodes) == 0 {
		return nil
	}
	cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.nodes[0].pool.cfg.ConnectTimeout+30*time.Second)
	defer cancel()
	var g errgroup.Group
	g.SetLimit(8)
	for _, n := range f.nodes {
		g.Go(func() error {
			return n.Run(cleanup, Cmd{Argv: Script(unauthorizeScript, f.key.comment), Step: "remove the fan-out key"})
		})
	}
	return g.Wait()
}

// Copy copies the closure of paths into node to: the part a holder (a node that got a closure through
// this Fan) has, fetched from the holder with the most of it, then the rest from the local store
// (CopyClosure, which sends only what the node still lacks). When every holder with a part is busy it
// waits for one; with none, or when the fetch fails, it copies all from the local store. The result's
// Method names the holder ("fan-out from nats-1, then export"), Missing is every path the node lacked
// and Sent what this process sent. to then holds the closure for later copies.
func (f *Fan) Copy(ctx context.Context, to *SSHNode, paths []string) (Copied, error) {
	start := time.Now()
	closure, err := to.local.Closure(ctx, paths)
	if err != nil {
		return Copied{Duration: time.Since(start)}, wrapErr(to.name, "copy closure", err)
	}
	holder, part, err := f.holder(ctx, to, closure)
	if err != nil {
		return Copied{Duration: time.Since(start)}, wrapErr(to.name, "copy closure", err)
	}
	var fetched []string
	method := ""
	if holder != nil {
		fetched, err = f.fetch(ctx, to, holder, part, part)
		f.release(holder)
		if err != nil {
			to.pool.log.Warn("fetching the closure from another node failed; copying it from here", "host", to.name,
				"from", holder.name, "err", err)
			fetched = nil
		} else {
			method = "fan-out from " + holder.name + ", then "
		}
	}
	res, err := to.copyClosureOf(ctx, paths, closure)
	res.Method = method + res.Method
	if fetched != nil {
		res.From = holder.name
	}
	res.Missing = append(fetched, res.Missing...)
	res.Duration = time.Since(start)
	if err != nil {
		return res, err
	}
	set := make(map[string]bool, len(closure))
	for _, p := range closure {
		set[p] = true
	}
	f.mu.Lock()
	f.holds[to] = set
	f.signal()
	f.mu.Unlock()
	return res, nil
}

// holder picks the holder for to's closure and marks it busy: the one that holds the most of it, and
// which part (in closure order, so a path's references come first). nil when no holder has any of it.
func (f *Fan) holder(ctx context.Context, to *SSHNode, closure []string) (*SSHNode, []string, error) {
	if _, ok := f.hostKeys[to]; !ok {
		return nil, nil, fmt.Errorf("%s is not a node of the fan-out", to.name)
	}
	for {
		f.mu.Lock()
		var best *SSHNode
		bestN, waiting := 0, false
		for h, set := range f.holds {
			if h == to {
				continue
			}
			n := 0
			for _, p := range closure {
				if set[p] {
					n++
				}
			}
			switch {
			case n == 0:
			case f.busy[h]:
				waiting = true
			case n > bestN:
				best, bestN = h, n
			}
		}
		if best != nil {
			f.busy[best] = true
			f.signal()
			part := make([]string, 0, bestN)
			for _, p := range closure {
				if f.holds[best][p] {
					part = append(part, p)
				}
			}
			f.mu.Unlock()
			return best, part, nil
		}
		changed := f.changed
		f.mu.Unlock()
		if !waiting {
			return nil, nil, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// release marks holder free again.
func (f *Fan) release(holder *SSHNode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.busy, holder)
	f.signal()
}

// signal wakes the waiters (f.mu held).
func (f *Fan) signal() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// fanKey is a fan-out's key: the private key (OpenSSH PEM), its authorized_keys line and the
// comment that finds that line again.
type fanKey struct {
	private    []byte
	authorized string
	comment    string
}

func newFanKey() (fanKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fanKey{}, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	comment := "cimdeploy-fanout-" + hex.EncodeToString(id[:])
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return fanKey{}, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return fanKey{}, err
	}
	line := `restrict,command="nix-store --serve" ` + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment
	return fanKey{private: pem.EncodeToMemory(block), authorized: line, comment: comment}, nil
}

// The fan-out's scripts, values as positional parameters only.
const (
	// authorizeScript appends the line $1 to root's authorized_keys.
	authorizeScript = `set -eu
umask 077
mkdir -p -- "$HOME/.ssh"
printf '%s\n' "$1" >>"$HOME/.ssh/authorized_keys"`
	// unauthorizeScript removes every line holding $1 from root's authorized_keys (temp + rename).
	unauthorizeScript = `set -eu
f=$HOME/.ssh/authorized_keys
[ -f "$f" ] || exit 0
grep -q -F -- "$1" "$f" || exit 0
umask 077
{ grep -v -F -- "$1" "$f" || [ $? = 1 ]; } >"$f.cimdeploy-fanout"
mv -f -- "$f.cimdeploy-fanout" "$f"`
	// fetchScript copies the store paths $4... from the holder root@$1, port $2, whose known_hosts
	// line is $3, with the private key on standard input, kept in a private directory removed at exit.
	fetchScript = `set -eu
d=$(mktemp -d)
trap 'rm -rf -- "$d"' EXIT
umask 077
cat >"$d/key"
printf '%s\n' "$3" >"$d/known_hosts"
h=$1 p=$2
shift 3
NIX_SSHOPTS="-F /dev/null -i $d/key -p $p -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$d/known_hosts -o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR" \
  nix copy --extra-experimental-features nix-command --no-check-sigs --from "ssh://root@$h" -- "$@"`
)

// knownHostsLine is the known_hosts line of n as the other nodes dial it: its ed25519 host key, read
// over this process's connection to n (whose host key is pinned).
func (n *SSHNode) knownHostsLine(ctx context.Context) (string, error) {
	out, err := n.Output(ctx, 4096, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
	if err != nil {
		return "", err
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(out)
	if err != nil {
		return "", fmt.Errorf("%s: host key: %w", n.name, err)
	}
	return knownhosts.Line([]string{knownhosts.Normalize(n.addr)}, key), nil
}

// fetch copies the closure of paths (closure: all of it, references first) into n from holder, and
// returns the paths n lacked. Every one of them is then checked against the local store's NAR hash;
// when the fetch or the check fails, those of them that arrived are deleted from n again.
func (f *Fan) fetch(ctx context.Context, n, holder *SSHNode, closure, paths []string) ([]string, error) {
	var missing []string
	for _, b := range batch(closure) {
		invalid, err := n.invalid(ctx, b)
		if err != nil {
			return nil, err
		}
		missing = append(missing, invalid...)
	}
	if len(missing) == 0 {
		return nil, nil
	}
	host, port := splitAddr(holder.addr)
	var err error
	for _, b := range batch(paths) {
		argv := append(Script(fetchScript, host, port, f.hostKeys[holder]), b...)
		if err = n.Run(ctx, Cmd{Argv: argv, Stdin: strings.NewReader(string(f.key.private)), Stdout: &capWriter{max: 1 << 20},
			Step: fmt.Sprintf("nix copy --from %s (%d paths)", holder.name, len(b))}); err != nil {
			break
		}
	}
	if err == nil {
		if err = n.verify(ctx, holder, missing); err == nil {
			return missing, nil
		}
	}
	// What arrived from the holder is not known to be what this process built: it goes again, so that
	// the copy from here that follows sends it.
	if derr := n.deleteArrived(context.WithoutCancel(ctx), holder, missing); derr != nil {
		err = fmt.Errorf("%w; deleting the paths fetched from %s: %w", err, holder.name, derr)
	}
	return missing, err
}

// deleteArrived deletes from n those of paths (missing before a fetch from holder) that it now has.
func (n *SSHNode) deleteArrived(ctx context.Context, holder *SSHNode, paths []string) error {
	ctx, cancel := context.WithTimeout(ctx, n.pool.cfg.ConnectTimeout+time.Minute)
	defer cancel()
	var arrived []string
	for _, b := range batch(paths) {
		invalid, err := n.invalid(ctx, b)
		if err != nil {
			return err
		}
		still := make(map[string]bool, len(invalid))
		for _, p := range invalid {
			still[p] = true
		}
		for _, p := range b {
			if !still[p] {
				arrived = append(arrived, p)
			}
		}
	}
	slices.Reverse(arrived) // referrers first: paths come references first, a batch may not hold both
	for _, b := range batch(arrived) {
		if err := n.Run(ctx, Cmd{Argv: append([]string{"nix-store", "--delete", "--"}, b...), Stdout: io.Discard,
			Step: fmt.Sprintf("delete %d paths fetched from %s", len(b), holder.name)}); err != nil {
			return err
		}
	}
	return nil
}

// verify checks that n holds every path of paths with the NAR hash the local store has for it.
func (n *SSHNode) verify(ctx context.Context, holder *SSHNode, paths []string) error {
	hs, ok := n.local.(hasher)
	for _, b := range batch(paths) {
		invalid, err := n.invalid(ctx, b)
		if err != nil {
			return err
		}
		if len(invalid) > 0 {
			return fmt.Errorf("%s: after nix copy --from %s, still lacks %q", n.name, holder.name, invalid)
		}
		if !ok {
			continue
		}
		want, err := hs.Hashes(ctx, b)
		if err != nil {
			return err
		}
		out, err := n.Output(ctx, 0, append([]string{"nix-store", "--query", "--hash", "--"}, b...)...)
		if err != nil {
			return err
		}
		got := strings.Fields(string(out))
		if len(got) != len(b) {
			return fmt.Errorf("%s: nix-store --query --hash printed %d hashes for %d paths", n.name, len(got), len(b))
		}
		for i, p := range b {
			if got[i] != want[i] {
				return fmt.Errorf("%s: %s from %s has NAR hash %s, the local store %s: not the path this process built",
					n.name, p, holder.name, got[i], want[i])
			}
		}
	}
	return nil
}

// hasher is a LocalStore that knows its paths' NAR hashes (NixStore).
type hasher interface {
	Hashes(ctx context.Context, paths []string) ([]string, error)
}
