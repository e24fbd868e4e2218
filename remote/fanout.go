package remote

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
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
	for _, n := range nodes[1:] {
		if n.pool != nodes[0].pool {
			return fmt.Errorf("%s: not of the first node's pool", n.name)
		}
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
	key, err := newFanKey()
	if err != nil {
		return err
	}
	// Authorize the key everywhere first (every node may serve), and take it away at the end.
	defer func() {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), nodes[0].pool.cfg.ConnectTimeout+30*time.Second)
		defer cancel()
		var g errgroup.Group
		g.SetLimit(8)
		for _, n := range nodes {
			g.Go(func() error {
				return n.Run(cleanup, Cmd{Argv: Script(unauthorizeScript, key.comment), Step: "remove the fan-out key"})
			})
		}
		err = errors.Join(err, g.Wait())
	}()
	hostKeys := make([]string, len(nodes))
	{
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
			return err
		}
	}
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
				missing, err := nodes[to].fetch(gctx, nodes[from], hostKeys[from], key, closure, paths)
				mu.Lock()
				defer mu.Unlock()
				res.Copies = append(res.Copies, FanCopy{Node: nodes[to].name, From: nodes[from].name, Missing: missing,
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

// fetch copies the closure of paths (closure: all of it) into n from holder, and returns how many
// paths n lacked.
func (n *SSHNode) fetch(ctx context.Context, holder *SSHNode, hostKey string, key fanKey, closure, paths []string) (int, error) {
	missing := 0
	for _, b := range batch(closure) {
		invalid, err := n.invalid(ctx, b)
		if err != nil {
			return 0, err
		}
		missing += len(invalid)
	}
	if missing == 0 {
		return 0, nil
	}
	host, port := splitAddr(holder.addr)
	for _, b := range batch(paths) {
		argv := append(Script(fetchScript, host, port, hostKey), b...)
		if err := n.Run(ctx, Cmd{Argv: argv, Stdin: strings.NewReader(string(key.private)), Stdout: &capWriter{max: 1 << 20},
			Step: fmt.Sprintf("nix copy --from %s (%d paths)", holder.name, len(b))}); err != nil {
			return missing, err
		}
	}
	for _, b := range batch(closure) {
		invalid, err := n.invalid(ctx, b)
		if err != nil {
			return missing, err
		}
		if len(invalid) > 0 {
			return missing, fmt.Errorf("%s: after nix copy --from %s, still lacks %q", n.name, holder.name, invalid)
		}
	}
	return missing, nil
}
