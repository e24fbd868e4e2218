package checkout

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
)

// node is one entry of a tree built for a test: a file, a symlink (link set), a submodule or, when
// it has children, a directory.
type node struct {
	data     string
	link     string
	mode     filemode.FileMode // overrides the mode the kind implies
	children map[string]*node
}

func file(data string) *node       { return &node{data: data} }
func link(target string) *node     { return &node{link: target} }
func dir(c map[string]*node) *node { return &node{children: c} }

// commitOf stores the tree in memory, as a crafted push would deliver it (names git's CLI refuses
// included), and returns the storage and a commit of it.
func commitOf(t testing.TB, root map[string]*node) (*memory.Storage, *object.Commit) {
	t.Helper()
	s := memory.NewStorage()
	put := func(o interface {
		Encode(plumbing.EncodedObject) error
	}, typ plumbing.ObjectType) plumbing.Hash {
		obj := s.NewEncodedObject()
		obj.SetType(typ)
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
	var tree func(map[string]*node) plumbing.Hash
	tree = func(children map[string]*node) plumbing.Hash {
		// Git orders entries by name, a directory's as if it ended in '/'.
		key := func(name string) string {
			if children[name].children != nil {
				return name + "/"
			}
			return name
		}
		var names []string
		for n := range children {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool { return key(names[i]) < key(names[j]) })
		var tr object.Tree
		for _, name := range names {
			n := children[name]
			e := object.TreeEntry{Name: name}
			switch {
			case n.children != nil:
				e.Mode, e.Hash = filemode.Dir, tree(n.children)
			case n.link != "":
				e.Mode, e.Hash = filemode.Symlink, blob(n.link)
			default:
				e.Mode, e.Hash = filemode.Regular, blob(n.data)
			}
			if n.mode != 0 {
				e.Mode = n.mode
			}
			tr.Entries = append(tr.Entries, e)
		}
		return put(&tr, plumbing.TreeObject)
	}
	c := &object.Commit{Message: "crafted", TreeHash: tree(root)}
	h := put(c, plumbing.CommitObject)
	commit, err := object.GetCommit(s, h)
	if err != nil {
		t.Fatal(err)
	}
	return s, commit
}

func TestCheckTree(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 64)
	tests := []struct {
		name   string
		tree   map[string]*node
		limits Limits
		path   string // the path the refusal names; "" when the tree is fine
		reason string
	}{
		{name: "files and directories", tree: map[string]*node{"flake.nix": file("{}"), "events": dir(map[string]*node{"1.json": file("{}")})}},
		{name: "relative link inside", tree: map[string]*node{"a": link("events/1.json"), "events": dir(map[string]*node{"1.json": file("{}")})}},
		{name: "link up and back inside", tree: map[string]*node{"events": dir(map[string]*node{"x": link("../flake.nix")}), "flake.nix": file("{}")}},
		{name: "dangling link inside", tree: map[string]*node{"a": link("nowhere/at/all")}},
		{name: "submodule", tree: map[string]*node{"vendor": {mode: filemode.Submodule, data: "x"}}},
		{name: "relative link out", tree: map[string]*node{"topology.nix": link("../../../../tmp/secret")},
			path: "topology.nix", reason: `symlink to "../../../../tmp/secret" leaves the tree`},
		{name: "absolute link", tree: map[string]*node{"flake.nix": link("/etc/passwd")}, path: "flake.nix", reason: "is absolute"},
		{name: "event linked to /dev/zero", tree: map[string]*node{"events": dir(map[string]*node{"0001.json": link("/dev/zero")})},
			path: "events/0001.json", reason: "is absolute"},
		{name: "chain through an inner link", tree: map[string]*node{
			"sub": dir(map[string]*node{"up": link("..")}), // sub/up is the root: fine by itself
			"esc": link("sub/up/../secret"),
		}, path: "esc", reason: "leaves the tree"},
		{name: "chain through an absolute link", tree: map[string]*node{"a": link("b/x"), "b": link("/tmp")}, path: "a", reason: "passes through \"b\", which is absolute"},
		{name: "loop", tree: map[string]*node{"a": link("b"), "b": link("a")}, path: "a", reason: "more than 40 links"},
		{name: "directory linked out", tree: map[string]*node{"nixosModules": link("../../somewhere")}, path: "nixosModules", reason: "leaves the tree"},
		{name: "entry named ..", tree: map[string]*node{"..": file("x")}, path: "..", reason: `entry name ".." is not allowed`},
		{name: "entry named .GIT", tree: map[string]*node{"sub": dir(map[string]*node{".GIT": dir(map[string]*node{"config": file("x")})})}, path: "sub/.GIT", reason: ".git is not allowed"},
		{name: "file over the limit", tree: map[string]*node{"events": dir(map[string]*node{"big.json": file(big)})}, limits: Limits{MaxFileSize: 63},
			path: "events/big.json", reason: "64 bytes is over the checkout limit of 63 bytes per file"},
		{name: "tree over the limit", tree: map[string]*node{"a": file(big), "b": file(big)}, limits: Limits{MaxTreeSize: 100},
			path: "b", reason: "over the checkout limit of 100 bytes per tree"},
		{name: "too many entries", tree: map[string]*node{"a": file("1"), "b": file("2"), "c": file("3")}, limits: Limits{MaxEntries: 2},
			path: "c", reason: "more than 2 entries"},
		{name: "link target too long", tree: map[string]*node{"a": link(strings.Repeat("d/", 2100))}, path: "a", reason: "longer than 4095"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, c := commitOf(t, tt.tree)
			err := checkTree(t.Context(), s, c, tt.limits)
			if tt.path == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var te *TreeError
			if !errors.As(err, &te) || !errors.Is(err, ErrUnsafeTree) {
				t.Fatalf("err = %v, want a *TreeError", err)
			}
			if te.Path != tt.path || !strings.Contains(te.Reason, tt.reason) {
				t.Errorf("refused %q: %s; want %q: …%s…", te.Path, te.Reason, tt.path, tt.reason)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.path)) {
				t.Errorf("the message %q does not name the path", err)
			}
		})
	}
}

func TestCheckTreeBoundsMessages(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("n", 700<<10)
	s, c := commitOf(t, map[string]*node{long: link("/etc/passwd")})
	err := checkTree(t.Context(), s, c, Limits{})
	if err == nil || len(err.Error()) > 600 || !strings.Contains(err.Error(), "(716800 bytes)") {
		t.Fatalf("err (%d bytes) = %.300v", len(fmt.Sprint(err)), err)
	}
}

// FuzzCheckTree builds random trees of files, directories and links from a small alphabet, and checks
// checkTree against the kernel: whenever it accepts a tree, the tree written to disk with real
// symlinks resolves, from every path, to a place inside it.
func FuzzCheckTree(f *testing.F) {
	f.Add([]byte("a>..|b>a/x|d/c>../../e"))
	f.Add([]byte("d/l>..|e>d/l/d/l/..|f>/x"))
	f.Add([]byte("x>y|y>x"))
	f.Fuzz(func(t *testing.T, spec []byte) {
		tree := map[string]*node{}
		var paths []string
		for _, item := range strings.Split(string(spec), "|") {
			p, target, isLink := strings.Cut(item, ">")
			if p == "" || len(paths) > 12 || strings.ContainsAny(p, "\x00") || len(target) > 64 {
				continue
			}
			parts := strings.Split(p, "/")
			cur := tree
			ok := true
			for i, part := range parts {
				if checkName(part) != nil {
					ok = false
					break
				}
				last := i == len(parts)-1
				n, exists := cur[part]
				if last {
					if exists {
						ok = false
						break
					}
					if isLink && target != "" && !strings.ContainsRune(target, 0) {
						cur[part] = link(target)
					} else {
						cur[part] = file("data")
					}
					break
				}
				if !exists {
					n = dir(map[string]*node{})
					cur[part] = n
				}
				if n.children == nil {
					ok = false
					break
				}
				cur = n.children
			}
			if ok {
				paths = append(paths, p)
			}
		}
		var pruneEmpty func(map[string]*node)
		pruneEmpty = func(m map[string]*node) {
			for k, n := range m {
				if n.children != nil {
					pruneEmpty(n.children)
					if len(n.children) == 0 {
						m[k] = file("empty dir")
					}
				}
			}
		}
		pruneEmpty(tree)
		s, c := commitOf(t, tree)
		if err := checkTree(t.Context(), s, c, Limits{}); err != nil {
			if !errors.Is(err, ErrUnsafeTree) {
				t.Fatalf("not a tree refusal: %v", err)
			}
			return
		}
		// Accepted: write it for real and let the kernel resolve every path.
		base := t.TempDir()
		root := filepath.Join(base, "root")
		var write func(string, map[string]*node)
		write = func(d string, m map[string]*node) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, n := range m {
				p := filepath.Join(d, name)
				switch {
				case n.children != nil:
					write(p, n.children)
				case n.link != "":
					if err := os.Symlink(n.link, p); err != nil {
						t.Fatal(err)
					}
				default:
					if err := os.WriteFile(p, []byte(n.data), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		write(root, tree)
		realRoot, err := filepath.EvalSymlinks(root)
		if err != nil {
			t.Fatal(err)
		}
		filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			resolved, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil // dangling, a loop the kernel gives up on, or through a file: reaches nothing
			}
			if rel, err := filepath.Rel(realRoot, resolved); err != nil || !filepath.IsLocal(rel) && rel != "." {
				t.Fatalf("accepted tree %q: %s resolves to %s, outside the tree", spec, p, resolved)
			}
			return nil
		})
	})
}
