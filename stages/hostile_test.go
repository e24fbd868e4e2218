package stages_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/stages"
)

// FuzzCheckoutGenerate commits random trees (the fixtures' events and projection, plus files, links,
// modes and sizes the fuzzer picks) into a real repository and runs the checkout and generate stages of
// a deploy run on them. Whatever the tree, the run ends promptly, no byte of a file outside the
// repository shows in the output or the result, nothing is written outside the workspace, and the
// workspace is gone afterwards.
func FuzzCheckoutGenerate(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("topology.nix>../../../../../../../../../SECRET"))
	f.Add([]byte("nixosModules>../../OUT|events/0010-x.json>/dev/zero"))
	f.Add([]byte("events/a>..|flake.nix>events/a/events/a/SECRET|nixosModules/nats-cluster.nix=x"))
	f.Add([]byte("events/0010-big.json=" + strings.Repeat("z", 300)))
	f.Add([]byte("topology.nix!|nixosModules/nats-cluster.nix>../topology.nix"))
	var base map[string]entry
	var once sync.Once
	f.Fuzz(func(t *testing.T, spec []byte) {
		once.Do(func() { base = fixtureTree(t) })
		outside := t.TempDir()
		secret := "cimdeploy-fuzz-secret-91c2"
		if err := os.WriteFile(filepath.Join(outside, "secret"), []byte(secret), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(outside, "out"), 0o755); err != nil {
			t.Fatal(err)
		}
		tree := map[string]entry{}
		for p, e := range base {
			tree[p] = e
		}
		for i, item := range strings.Split(string(spec), "|") {
			if i >= 8 {
				break
			}
			p, rest := item, ""
			op := byte(0)
			if k := strings.IndexAny(item, ">=!"); k >= 0 {
				p, op, rest = item[:k], item[k], item[k+1:]
			}
			p = path.Clean(p)
			if p == "." || strings.HasPrefix(p, "../") || p == ".." || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) || len(rest) > 4096 {
				continue
			}
			rest = strings.ReplaceAll(rest, "SECRET", strings.TrimPrefix(filepath.Join(outside, "secret"), "/"))
			rest = strings.ReplaceAll(rest, "OUT", strings.TrimPrefix(filepath.Join(outside, "out"), "/"))
			switch op {
			case '>':
				if rest != "" && !strings.ContainsRune(rest, 0) {
					tree[p] = entry{link: rest}
				}
			case '!':
				tree[p] = entry{data: "#!/bin/sh\n", mode: filemode.Executable}
			default:
				tree[p] = entry{data: rest}
			}
		}
		repo, ok := commitTree(t, tree)
		if !ok {
			return // not a tree git can hold (a file and a directory of one name)
		}
		data := t.TempDir()
		work := filepath.Join(data, "work")
		var out bytes.Buffer
		runner := &pipeline.Runner{
			Output:   syncWriter{mu: &sync.Mutex{}, b: &out},
			Parallel: 2,
			Timeouts: map[string]time.Duration{"checkout": 20 * time.Second, "generate": 10 * time.Second},
			Stages: []pipeline.Stage{
				stages.Checkout{Cache: &checkout.Cache{Dir: data}, Source: checkout.Source{URL: repo}, WorkDir: work},
				stages.Generate{},
				stages.Cleanup{WorkDir: work},
			},
		}
		start := time.Now()
		res, err := runner.Run(t.Context(), &pipeline.Run{ID: pipeline.NewRunID(), Repo: repo, Ref: "main", Trigger: pipeline.TriggerManual, Kind: pipeline.KindDeploy})
		if err != nil {
			t.Fatalf("the runner broke: %v", err)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("the run took %s", d)
		}
		if len(spec) == 0 && res.Status != pipeline.StatusSuccess {
			t.Fatalf("the fixtures' own tree failed: %s", res.Error)
		}
		report, _ := json.Marshal(res)
		if bytes.Contains(out.Bytes(), []byte(secret)) || bytes.Contains(report, []byte(secret)) {
			t.Fatalf("tree %q: the secret shows in the output or the result:\n%s", spec, report)
		}
		entries, _ := os.ReadDir(filepath.Join(outside, "out"))
		if len(entries) != 0 {
			t.Fatalf("tree %q: the run wrote %v outside", spec, entries)
		}
		if ws, _ := os.ReadDir(work); len(ws) != 0 {
			t.Errorf("workspaces left: %v", ws)
		}
	})
}

// entry is a file (data, mode) or a symlink (link) of a tree the fuzzer builds.
type entry struct {
	data string
	link string
	mode filemode.FileMode
}

// fixtureTree is an infrastructure repository's tree: the fixtures' events and their projection.
func fixtureTree(t *testing.T) map[string]entry {
	t.Helper()
	repo := infraRepo(t)
	tree := map[string]entry{}
	err := filepath.WalkDir(repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repo, p)
		tree[filepath.ToSlash(rel)] = entry{data: string(b)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// commitTree writes the tree as one commit on main of a new bare repository, with go-git, so names
// and links the git CLI would refuse to add are committed as a crafted push would deliver them. It
// reports false when the paths do not form a tree (a path both a file and a directory).
func commitTree(t *testing.T, files map[string]entry) (string, bool) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "crafted.git")
	r, err := gogit.PlainInit(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	s := r.Storer
	type dirNode struct {
		files map[string]entry
		dirs  map[string]*dirNode
	}
	newDir := func() *dirNode { return &dirNode{files: map[string]entry{}, dirs: map[string]*dirNode{}} }
	root := newDir()
	for p, e := range files {
		parts := strings.Split(p, "/")
		d := root
		for _, part := range parts[:len(parts)-1] {
			if _, clash := d.files[part]; clash {
				return "", false
			}
			if d.dirs[part] == nil {
				d.dirs[part] = newDir()
			}
			d = d.dirs[part]
		}
		last := parts[len(parts)-1]
		if _, clash := d.dirs[last]; clash {
			return "", false
		}
		d.files[last] = e
	}
	put := func(o interface {
		Encode(plumbing.EncodedObject) error
	}) plumbing.Hash {
		obj := s.NewEncodedObject()
		if err := o.Encode(obj); err != nil {
			t.Fatal(err)
		}
		h, err := s.SetEncodedObject(obj)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	blob := func(data string) plumbing.Hash {
		obj := s.NewEncodedObject()
		obj.SetType(plumbing.BlobObject)
		w, _ := obj.Writer()
		w.Write([]byte(data))
		w.Close()
		h, err := s.SetEncodedObject(obj)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	var write func(d *dirNode) plumbing.Hash
	write = func(d *dirNode) plumbing.Hash {
		var tr object.Tree
		for name, e := range d.files {
			te := object.TreeEntry{Name: name, Mode: filemode.Regular}
			switch {
			case e.link != "":
				te.Mode, te.Hash = filemode.Symlink, blob(e.link)
			default:
				te.Hash = blob(e.data)
				if e.mode != 0 {
					te.Mode = e.mode
				}
			}
			tr.Entries = append(tr.Entries, te)
		}
		for name, sub := range d.dirs {
			tr.Entries = append(tr.Entries, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: write(sub)})
		}
		// Git orders entries by name, a directory's as if it ended in '/'.
		key := func(e object.TreeEntry) string {
			if e.Mode == filemode.Dir {
				return e.Name + "/"
			}
			return e.Name
		}
		sort.Slice(tr.Entries, func(i, j int) bool { return key(tr.Entries[i]) < key(tr.Entries[j]) })
		return put(&tr)
	}
	sig := object.Signature{Name: "Mallory", Email: "mallory@example.org", When: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	commit := put(&object.Commit{Author: sig, Committer: sig, Message: "crafted\n", TreeHash: write(root)})
	if err := s.SetReference(plumbing.NewHashReference("refs/heads/main", commit)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, "refs/heads/main")); err != nil {
		t.Fatal(err)
	}
	return dir, true
}
