package remote_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/remote"
)

// TestFanout copies a new closure to the lab's nodes: the first from here, the second from the
// first (node to node, with the call's own key), and leaves no key behind.
func TestFanout(t *testing.T) {
	l := shared.Get(t)
	pool, _ := newPool(t, labConfig(l))
	var nodes []*remote.SSHNode
	for _, n := range l.Nodes() {
		sn, err := pool.Node(remote.Host{Name: n.Name(), Addr: n.Address().String()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, sn)
	}
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
		keys, err := os.ReadFile(filepath.Join(n.Dir(), "home", ".ssh", "authorized_keys"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(keys), "cimdeploy-fanout-") {
			t.Errorf("%s: the fan-out key is still authorized:\n%s", n.Name(), keys)
		}
	}
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
