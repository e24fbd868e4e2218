package remote_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/remote"
	"golang.org/x/sync/errgroup"
)

// BenchmarkClosureCopy copies a synthetic closure (2,000 store paths of 500 MiB in all, each path
// referencing the one before, so the last one's closure is all of them) from the local store to a
// lab node, in one run: with CopyClosure's export method (nix-store --export here into nix-store
// --import there, over remote's SSH connection) and with its nix-copy method (nix copy --to
// ssh-ng://root@node through OpenSSH with the same key and known_hosts), each in turn within every
// iteration, the node's copy deleted before each copy. It reports both times and export/nix-copy as
// the ratio of their throughputs (>= 1: the export method is at least as fast). The closure is the
// same on every run (fixed contents), so only its first run adds it to the local store:
//
//	go test ./remote -run '^$' -bench ClosureCopy -benchtime 1x
//
// CIMDEPLOY_BENCH_CLOSURE_PATHS and CIMDEPLOY_BENCH_CLOSURE_MIB set another shape.
func BenchmarkClosureCopy(b *testing.B) {
	paths, mib := benchClosureShape(b)
	closure := syntheticClosure(b, paths, int64(mib)<<20)
	top := closure[len(closure)-1]
	l := shared.Get(b)
	node := l.Nodes()[0]
	nodes := map[string]*remote.SSHNode{}
	for _, method := range []string{remote.CopyExport, remote.CopyNix} {
		cfg := labConfig(l)
		cfg.Keepalive = 15 * time.Second
		cfg.ClosureCopy = method
		p, err := remote.NewPool(cfg, remote.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		n, err := p.Node(remote.Host{Name: node.Name(), Addr: node.Address().String()}, nil)
		if err != nil {
			b.Fatal(err)
		}
		nodes[method] = n
	}
	size := int64(mib) << 20
	var took = map[string]time.Duration{}
	var sent int64
	b.SetBytes(size)
	for b.Loop() {
		for _, method := range []string{remote.CopyExport, remote.CopyNix} {
			b.StopTimer()
			deleteFromNode(b, node, closure)
			b.StartTimer()
			start := time.Now()
			got, err := nodes[method].CopyClosure(b.Context(), []string{top})
			if err != nil {
				b.Fatal(err)
			}
			took[method] += time.Since(start)
			if len(got.Missing) != len(closure) {
				b.Fatalf("%s: copied %d paths, want %d", method, len(got.Missing), len(closure))
			}
			if method == remote.CopyExport {
				sent += got.Sent
			}
		}
	}
	b.StopTimer()
	deleteFromNode(b, node, closure)
	n := float64(b.N)
	export, nixCopy := took[remote.CopyExport].Seconds()/n, took[remote.CopyNix].Seconds()/n
	b.ReportMetric(export, "export-s/op")
	b.ReportMetric(nixCopy, "nix-copy-s/op")
	b.ReportMetric(nixCopy/export, "export/nix-copy")
	fmt.Printf("closure of %d paths, %d MiB (export stream %d bytes) to %s: export %.2fs (%.1f MB/s), nix copy --to ssh-ng %.2fs (%.1f MB/s), export/nix-copy %.2f\n",
		len(closure), mib, sent/int64(b.N), node.Name(), export, float64(size)/export/1e6, nixCopy, float64(size)/nixCopy/1e6, nixCopy/export)
}

func benchClosureShape(b *testing.B) (paths, mib int) {
	paths, mib = 2000, 500
	for _, v := range []struct {
		name string
		to   *int
	}{{"CIMDEPLOY_BENCH_CLOSURE_PATHS", &paths}, {"CIMDEPLOY_BENCH_CLOSURE_MIB", &mib}} {
		if s := os.Getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				b.Fatalf("%s %q: want a positive number", v.name, s)
			}
			*v.to = n
		}
	}
	return paths, mib
}

// syntheticClosure adds n store paths of size bytes in all to the local store and returns them,
// references first: path i is text that names path i-1 (a reference, as Nix scans for it) followed
// by fixed pseudo-random base64, so the same n and size give the same paths on every run. They are
// made by builtins.toFile in one nix-instantiate run.
func syntheticClosure(b testing.TB, n int, size int64) []string {
	b.Helper()
	dir := b.TempDir()
	rng := rand.New(rand.NewChaCha8([32]byte{'c', 'i', 'm', 'd', 'e', 'p', 'l', 'o', 'y'}))
	per := int(size / int64(n))
	raw := make([]byte, per*3/4)
	var expr strings.Builder
	expr.WriteString("let\n")
	for i := range n {
		for j := range raw {
			raw[j] = byte(rng.Uint32())
		}
		data := base64.StdEncoding.EncodeToString(raw)
		if err := os.WriteFile(filepath.Join(dir, "data-"+strconv.Itoa(i)), []byte(data), 0o644); err != nil {
			b.Fatal(err)
		}
		ref := `""`
		if i > 0 {
			ref = `"ref ${p` + strconv.Itoa(i-1) + `}\n"`
		}
		fmt.Fprintf(&expr, "  p%d = builtins.toFile \"cimdeploy-bench-%d\" (%s + builtins.readFile ./data-%d);\n", i, i, ref, i)
	}
	expr.WriteString("in [")
	for i := range n {
		fmt.Fprintf(&expr, " p%d", i)
	}
	expr.WriteString(" ]\n")
	file := filepath.Join(dir, "closure.nix")
	if err := os.WriteFile(file, []byte(expr.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(b.Context(), "nix-instantiate", "--eval", "--strict", "--read-write-mode", "--json", file)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("nix-instantiate: %v: %s", err, stderr.String())
	}
	var paths []string
	for _, f := range strings.Split(strings.Trim(strings.TrimSpace(string(out)), "[]"), ",") {
		paths = append(paths, strings.Trim(f, `"`))
	}
	if len(paths) != n {
		b.Fatalf("nix-instantiate: %d paths, want %d", len(paths), n)
	}
	return paths
}

// deleteFromNode deletes those of paths (references first) that the node's store holds: referrers
// first (xargs may cut the list into several nix-store runs).
func deleteFromNode(b testing.TB, n *lab.Node, paths []string) {
	b.Helper()
	reversed := make([]string, len(paths))
	for i, p := range paths {
		reversed[len(paths)-1-i] = p
	}
	list := strings.Join(reversed, "\n") + "\n"
	out, err := n.RunInput(b.Context(), "xargs -r nix-store --check-validity --print-invalid", strings.NewReader(list))
	if err != nil {
		b.Fatalf("%s: query the closure: %v", n.Name(), err)
	}
	invalid := map[string]bool{}
	for _, p := range strings.Fields(out) {
		invalid[p] = true
	}
	var valid []string
	for _, p := range reversed {
		if !invalid[p] {
			valid = append(valid, p)
		}
	}
	if len(valid) == 0 {
		return
	}
	// A nix process of the copy just ended (nix-daemon --stdio, nix-store --serve) may hold its
	// temporary roots for a moment longer: "still alive" is retried until a deadline.
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := n.RunInput(b.Context(), "xargs -r nix-store --delete >/dev/null", strings.NewReader(strings.Join(valid, "\n")+"\n"))
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "still alive") || time.Now().After(deadline) {
			b.Fatalf("%s: delete the closure: %v", n.Name(), err)
		}
		<-tick.C
	}
}

// BenchmarkFanout copies one synthetic closure (200 paths, 50 MiB unless CIMDEPLOY_BENCH_CLOSURE_PATHS
// and CIMDEPLOY_BENCH_CLOSURE_MIB say otherwise) to every node of a lab of its own
// (CIMDEPLOY_BENCH_FANOUT_NODES nodes, 10 unless set) by two routes in turns: from here to every
// node (CopyClosure, 4 at a time) and Fanout (from here to the first node, then node to node). It
// reports both wall times and the bytes this process sent by each route:
//
//	go test ./remote -run '^$' -bench Fanout -benchtime 1x
func BenchmarkFanout(b *testing.B) {
	count := 10
	if s := os.Getenv("CIMDEPLOY_BENCH_FANOUT_NODES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 {
			b.Fatalf("CIMDEPLOY_BENCH_FANOUT_NODES %q: want a number of nodes, 2 or more", s)
		}
		count = n
	}
	paths, mib := 200, 50
	if os.Getenv("CIMDEPLOY_BENCH_CLOSURE_PATHS") != "" || os.Getenv("CIMDEPLOY_BENCH_CLOSURE_MIB") != "" {
		paths, mib = benchClosureShape(b)
	}
	closure := syntheticClosure(b, paths, int64(mib)<<20)
	top := closure[len(closure)-1]
	l := lab.Start(b, lab.Options{Nodes: count})
	cfg := labConfig(l)
	cfg.Keepalive = 15 * time.Second
	p, err := remote.NewPool(cfg, remote.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	var nodes []*remote.SSHNode
	for _, n := range l.Nodes() {
		sn, err := p.Node(remote.Host{Name: n.Name(), Addr: n.Address().String()}, nil)
		if err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, sn)
	}
	wipe := func() {
		for _, n := range l.Nodes() {
			deleteFromNode(b, n, closure)
		}
	}
	var direct, fanned time.Duration
	var directSent, fannedSent int64
	rounds := 0
	for b.Loop() {
		b.StopTimer()
		wipe()
		b.StartTimer()
		start := time.Now()
		var g errgroup.Group
		g.SetLimit(4)
		sent := make([]int64, len(nodes))
		for i, n := range nodes {
			g.Go(func() error {
				c, err := n.CopyClosure(b.Context(), []string{top})
				sent[i] = c.Sent
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		direct += time.Since(start)
		for _, s := range sent {
			directSent += s
		}
		b.StopTimer()
		wipe()
		b.StartTimer()
		start = time.Now()
		res, err := remote.Fanout(b.Context(), nodes, []string{top})
		if err != nil {
			b.Fatal(err)
		}
		fanned += time.Since(start)
		fannedSent += res.Sent
		rounds = res.Rounds
	}
	b.StopTimer()
	wipe()
	n := float64(b.N)
	b.ReportMetric(direct.Seconds()/n, "direct-s/op")
	b.ReportMetric(fanned.Seconds()/n, "fanout-s/op")
	b.ReportMetric(float64(directSent)/n/1e6, "direct-sent-MB/op")
	b.ReportMetric(float64(fannedSent)/n/1e6, "fanout-sent-MB/op")
	fmt.Printf("closure of %d paths, %d MiB to %d nodes: from here to each (4 at a time) %.2fs, %d bytes sent; Fanout (%d rounds node to node) %.2fs, %d bytes sent\n",
		len(closure), mib, count, direct.Seconds()/n, directSent/int64(b.N), rounds, fanned.Seconds()/n, fannedSent/int64(b.N))
}
