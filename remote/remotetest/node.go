package remotetest

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
)

// Program is a fake program of a Node: it reads cmd.Stdin, writes cmd.Stdout and cmd.Stderr (never
// nil when called) and returns nil or a *remote.ExitError.
type Program func(ctx context.Context, cmd remote.Cmd) error

// Node is a fake remote.Node: a Nix store (a set of store paths), a reachable flag and programs. Its
// built-in programs are a small shell: true, false, echo, cat, printf '%s\n' ARGS, head -c N
// /dev/zero, and sh -c SCRIPT whose statements (separated by ; or newlines) are those programs,
// "exit N" and ">&2" redirections. Any other program exits 127 unless Handle adds it. Safe for
// concurrent use.
type Node struct {
	name  string
	local remote.LocalStore

	mu       sync.Mutex
	up       bool
	store    map[string]bool
	programs map[string]Program
	runs     [][]string
}

var _ remote.Node = (*Node)(nil)

// NewNode is a reachable node with an empty store; closures come from local (remote.NixStore{} when
// nil).
func NewNode(name string, local remote.LocalStore) *Node {
	if local == nil {
		local = remote.NixStore{}
	}
	return &Node{name: name, local: local, up: true, store: map[string]bool{}, programs: map[string]Program{}}
}

// Name is the node's name.
func (n *Node) Name() string { return n.name }

// SetUp makes the node reachable (true) or refuse connections (false), as a stopped container does.
func (n *Node) SetUp(up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.up = up
}

// Up reports whether the node is reachable.
func (n *Node) Up() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.up
}

// Handle makes program (argv[0]) run p, replacing a built-in one.
func (n *Node) Handle(program string, p Program) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.programs[program] = p
}

// Has returns the paths of paths the node's store holds.
func (n *Node) Has(paths ...string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var have []string
	for _, p := range paths {
		if n.store[p] {
			have = append(have, p)
		}
	}
	return have
}

// Store lists the node's store, sorted.
func (n *Node) Store() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var s []string
	for p := range n.store {
		s = append(s, p)
	}
	sort.Strings(s)
	return s
}

// Runs are the argvs Run was called with, in order.
func (n *Node) Runs() [][]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([][]string(nil), n.runs...)
}

// refused is the error of a connection to a node that is down, as the SSH client reports it.
func (n *Node) refused(step string) error {
	return &remote.Error{Host: n.name, Step: step, Err: fmt.Errorf("connect: %w",
		&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})}
}

// Run implements remote.Node.
func (n *Node) Run(ctx context.Context, cmd remote.Cmd) error {
	step := cmd.Step
	if step == "" {
		step = "run `" + strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return '?'
			}
			return r
		}, remote.Join(cmd.Argv)) + "`"
	}
	if len(cmd.Argv) == 0 || cmd.Argv[0] == "" {
		return &remote.Error{Host: n.name, Step: step, Err: fmt.Errorf("empty argv")}
	}
	for i, a := range cmd.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return &remote.Error{Host: n.name, Step: step, Err: fmt.Errorf("argv[%d] %q holds a NUL byte", i, a)}
		}
	}
	n.mu.Lock()
	up := n.up
	n.runs = append(n.runs, append([]string(nil), cmd.Argv...))
	n.mu.Unlock()
	if !up {
		return n.refused(step)
	}
	if err := ctx.Err(); err != nil {
		return &remote.Error{Host: n.name, Step: step, Err: err}
	}
	stderr := &tail{}
	c := cmd
	if c.Stdin == nil {
		c.Stdin = strings.NewReader("")
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	c.Stderr = io.MultiWriter(stderr, orDiscard(cmd.Stderr))
	err := n.exec(ctx, c)
	if ee, ok := err.(*remote.ExitError); ok {
		ee.Stderr = stderr.String()
	}
	if err != nil {
		return &remote.Error{Host: n.name, Step: step, Err: err}
	}
	return nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func (n *Node) exec(ctx context.Context, cmd remote.Cmd) error {
	n.mu.Lock()
	p, ok := n.programs[cmd.Argv[0]]
	n.mu.Unlock()
	if ok {
		return p(ctx, cmd)
	}
	args := cmd.Argv[1:]
	switch cmd.Argv[0] {
	case "true":
		return nil
	case "false":
		return &remote.ExitError{Code: 1}
	case "echo":
		fmt.Fprintln(cmd.Stdout, strings.Join(args, " "))
		return nil
	case "cat":
		_, err := io.Copy(cmd.Stdout, cmd.Stdin)
		return err
	case "printf":
		if len(args) == 0 || args[0] != "%s\n" {
			return &remote.ExitError{Code: 2, Stderr: "fake printf: only '%s\\n'"}
		}
		for _, a := range args[1:] {
			fmt.Fprintln(cmd.Stdout, a)
		}
		return nil
	case "head":
		if len(args) != 3 || args[0] != "-c" || args[2] != "/dev/zero" {
			fmt.Fprintln(cmd.Stderr, "fake head: only -c N /dev/zero")
			return &remote.ExitError{Code: 2}
		}
		size, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil {
			return &remote.ExitError{Code: 1}
		}
		_, err = io.CopyN(cmd.Stdout, zeros{}, size)
		return err
	case "sleep":
		d, err := strconv.ParseFloat(strings.Join(args, ""), 64)
		if err != nil {
			return &remote.ExitError{Code: 1}
		}
		t := time.NewTimer(time.Duration(d * float64(time.Second)))
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case "sh":
		if len(args) < 2 || args[0] != "-c" {
			return &remote.ExitError{Code: 2}
		}
		return n.script(ctx, cmd, args[1])
	}
	fmt.Fprintf(cmd.Stderr, "sh: 1: %s: not found\n", cmd.Argv[0])
	return &remote.ExitError{Code: 127}
}

// script runs the statements of a tiny shell script.
func (n *Node) script(ctx context.Context, cmd remote.Cmd, script string) error {
	for _, stmt := range strings.FieldsFunc(script, func(r rune) bool { return r == ';' || r == '\n' }) {
		words, err := splitWords(stmt)
		if err != nil {
			fmt.Fprintf(cmd.Stderr, "sh: %v\n", err)
			return &remote.ExitError{Code: 2}
		}
		if len(words) == 0 {
			continue
		}
		c := cmd
		if words[len(words)-1] == ">&2" {
			words = words[:len(words)-1]
			c.Stdout = cmd.Stderr
		}
		if words[0] == "exit" {
			code := 0
			if len(words) > 1 {
				code, _ = strconv.Atoi(words[1])
			}
			if code == 0 {
				return nil
			}
			return &remote.ExitError{Code: code}
		}
		c.Argv = words
		if err := n.exec(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// splitWords splits a statement into words: whitespace separates, single and double quotes group.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// CopyClosure implements remote.Node: the paths of the closure the store lacks are exported from the
// local store (the bytes are counted, as the SSH node sends them) and added to the store.
func (n *Node) CopyClosure(ctx context.Context, paths []string) (remote.Copied, error) {
	start := time.Now()
	res := remote.Copied{Method: remote.CopyExport}
	fail := func(err error) (remote.Copied, error) {
		res.Duration = time.Since(start)
		return res, &remote.Error{Host: n.name, Step: "copy closure", Err: err}
	}
	if !n.Up() {
		return res, n.refused("copy closure")
	}
	if len(paths) == 0 {
		return res, nil
	}
	for _, p := range paths {
		if !storePath.MatchString(p) {
			return fail(fmt.Errorf("%q is not a store path", p))
		}
	}
	closure, err := n.local.Closure(ctx, paths)
	if err != nil {
		return fail(err)
	}
	res.Closure = len(closure)
	n.mu.Lock()
	for _, p := range closure {
		if !n.store[p] {
			res.Missing = append(res.Missing, p)
		}
	}
	n.mu.Unlock()
	if len(res.Missing) > 0 {
		var c counter
		if err := n.local.Export(ctx, res.Missing, &c); err != nil {
			return fail(err)
		}
		res.Sent = c.n
		if !n.Up() {
			return fail(remote.ErrConnectionLost)
		}
		n.mu.Lock()
		for _, p := range res.Missing {
			n.store[p] = true
		}
		n.mu.Unlock()
	}
	res.Duration = time.Since(start)
	return res, nil
}

var storePath = regexp.MustCompile(`^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$`)

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// tail keeps the last 64 KiB written, as the SSH client keeps of standard error.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - 64<<10; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
