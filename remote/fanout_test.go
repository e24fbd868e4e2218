package remote_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/remote"
)

// TestFanout copies a new closure to the lab's nodes: the first from here, the second from the
// first (node to node, with the call's own key), and leaves no key behind.
func TestFanout(t *testing.T) {
	nodes, l := fanNodes(t, nil)
	chain := closureChain(t, 3)
	res, err := remote.Fanout(t.Context(), nodes, []string{chain[2]})
	if err != nil {
		t.Fatal(err)
	}
	if res.Closure != 3 || res.Rounds != 1 || res.Sent == 0 || len(res.Copies) != len(nodes) {
		t.Errorf("fan-out: %+v, want a closure of 3 in 1 round to %d nodes", res, len(nodes))
	}
	for i, c := range res.Copies {
		want := ""
		if i > 0 {
			want = nodes[0].Name()
		}
		if c.Node != nodes[i].Name() || c.From != want || c.Missing != 3 {
			t.Errorf("copy %d: %+v, want %s from %q, 3 paths", i, c, nodes[i].Name(), want)
		}
	}
	w := labWorld(t)
	for i, n := range l.Nodes() {
		if have := w.has(t, i, chain); len(have) != 3 {
			t.Errorf("%s has %q, want all of %q", n.Name(), have, chain)
		}
	}
	noFanKey(t, l)
	// Again: every node has it; the nodes fetch nothing.
	again, err := remote.Fanout(t.Context(), nodes, []string{chain[2]})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range again.Copies {
		if c.Missing != 0 {
			t.Errorf("second fan-out: %+v, want nothing missing", c)
		}
	}
}

// lyingStore is the local store with one path's NAR hash replaced: what a node would see as a
// mismatch had another node served it other contents under that path's name.
type lyingStore struct {
	remote.NixStore
	path string
}

func (s lyingStore) Hashes(ctx context.Context, paths []string) ([]string, error) {
	hs, err := s.NixStore.Hashes(ctx, paths)
	for i, p := range paths {
		if p == s.path && err == nil {
			hs[i] = "sha256:0000000000000000000000000000000000000000000000000000"
		}
	}
	return hs, err
}

// fanNodes are the lab's nodes of one pool whose local store is local (nil: the real one).
func fanNodes(t *testing.T, local remote.LocalStore) ([]*remote.SSHNode, *lab.Lab) {
	l := shared.Get(t)
	pool, _ := newPool(t, labConfig(l))
	var nodes []*remote.SSHNode
	for _, n := range l.Nodes() {
		sn, err := pool.Node(remote.Host{Name: n.Name(), Addr: n.Address().String()}, local)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, sn)
	}
	return nodes, l
}

// noFanKey fails t when a node still authorizes a fan-out key.
func noFanKey(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, n := range l.Nodes() {
		keys, err := os.ReadFile(filepath.Join(n.Dir(), "home", ".ssh", "authorized_keys"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(keys), "cimdeploy-fanout-") {
			t.Errorf("%s: the fan-out key is still authorized:\n%s", n.Name(), keys)
		}
	}
}

// TestFanCopy: the first node's copy comes from here; the next nodes fetch the part of their closure a
// node already holds from that node, and get only the rest from here (a closure that extends the
// first one by a path of its own).
func TestFanCopy(t *testing.T) {
	nodes, l := fanNodes(t, nil)
	chain := closureChain(t, 4) // chain[3]'s closure is chain[2]'s and itself
	fan, err := remote.NewFan(t.Context(), nodes)
	if err != nil {
		t.Fatal(err)
	}
	first, err := fan.Copy(t.Context(), nodes[0], []string{chain[2]})
	if err != nil {
		t.Fatal(err)
	}
	if first.From != "" || len(first.Missing) != 3 || first.Sent == 0 {
		t.Errorf("first copy: %+v, want 3 paths from here", first)
	}
	for _, n := range nodes[1:] {
		c, err := fan.Copy(t.Context(), n, []string{chain[3]})
		if err != nil {
			t.Fatal(err)
		}
		if c.From == "" || len(c.Missing) != 4 || !strings.HasPrefix(c.Method, "fan-out from "+c.From) {
			t.Errorf("%s: %+v, want the 3 shared paths fetched from a node and 1 from here", n.Name(), c)
		}
	}
	if err := fan.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	w := labWorld(t)
	for i, n := range l.Nodes() {
		want := chain[:4]
		if i == 0 {
			want = chain[:3]
		}
		if have := w.has(t, i, chain); len(have) != len(want) {
			t.Errorf("%s has %q, want %q", n.Name(), have, want)
		}
	}
	noFanKey(t, l)
}

// TestFanCopyRefusesAnotherHash: a path fetched from another node whose NAR hash is not the local
// store's is deleted again, and the node gets the closure from here instead.
func TestFanCopyRefusesAnotherHash(t *testing.T) {
	chain := closureChain(t, 3)
	nodes, l := fanNodes(t, lyingStore{path: chain[1]})
	fan, err := remote.NewFan(t.Context(), nodes)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := fan.Close(t.Context()); err != nil {
			t.Error(err)
		}
		noFanKey(t, l)
	}()
	if _, err := fan.Copy(t.Context(), nodes[0], []string{chain[2]}); err != nil {
		t.Fatal(err)
	}
	c, err := fan.Copy(t.Context(), nodes[1], []string{chain[2]})
	if err != nil {
		t.Fatal(err)
	}
	if c.From != "" || len(c.Missing) != 3 || c.Sent == 0 {
		t.Errorf("copy after a hash mismatch: %+v, want all 3 paths from here", c)
	}
	alone, err := remote.NewFan(t.Context(), nodes[:1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alone.Copy(t.Context(), nodes[1], []string{chain[2]}); err == nil || !strings.Contains(err.Error(), "not a node of the fan-out") {
		t.Errorf("copy to a node outside the fan: %v", err)
	}
	if err := alone.Close(t.Context()); err != nil {
		t.Error(err)
	}
}
