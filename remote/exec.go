package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// Error is how every operation of this package fails: the host, the step, and the cause, which
// errors.Is/As reach (*ExitError, *HostKeyError, ErrConnectionLost, ErrNoExitStatus, ErrAuth,
// context.Canceled, ...).
type Error struct {
	Host string // nats-1, pve
	Step string // connect, run "nix-store --import", upload template, pct create 201, ...
	Err  error
}

func (e *Error) Error() string { return e.Host + ": " + e.Step + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// wrapErr names host and step in err. An *Error of the same host inside is merged into one:
// "pve: upload template nats-1: write /x.part: exit status 1: ...".
func wrapErr(host, step string, err error) error {
	var inner *Error
	if errors.As(err, &inner) && inner.Host == host && err == error(inner) {
		return &Error{Host: host, Step: step + ": " + inner.Step, Err: inner.Err}
	}
	return &Error{Host: host, Step: step, Err: err}
}

// ExitError is a remote command that ran and failed: a non-zero exit status, or a signal.
type ExitError struct {
	Code   int    // the exit status; -1 when the command was killed by Signal
	Signal string // "KILL", "TERM", ... when killed by a signal
	Stderr string // the end of its standard error (the last 64 KiB), verbatim
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("exit status %d", e.Code)
	if e.Signal != "" {
		msg = "killed by signal " + e.Signal
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

// The sentinel errors of this package.
var (
	// ErrConnectionLost: the connection died while a command ran (or before it could start); the
	// command may or may not have finished on the host.
	ErrConnectionLost = errors.New("connection lost")
	// ErrNoExitStatus: the connection is fine but the command's session ended without an exit
	// status or signal.
	ErrNoExitStatus = errors.New("remote command ended without an exit status")
	// ErrAuth: the host refused every key offered.
	ErrAuth = errors.New("authentication refused")
)

// Cmd is a command to run on a host: a program and its arguments, which Run quotes for the remote
// login shell (POSIX sh or bash). There is no command line to paste values into.
type Cmd struct {
	Argv []string
	// Stdin is copied to the command until it returns EOF or an error, or the command ends. Run may
	// return while a Read of Stdin is still blocked: that copy ends when the Read returns.
	Stdin io.Reader
	// Stdout and Stderr receive the command's output as it comes; nil sends it to the run log
	// (Options.Output). A writer that fails is not written to again; the command still runs to its
	// end and Run reports the write error.
	Stdout io.Writer
	Stderr io.Writer
	// Step names the command in errors and logs; empty means run "<the first words of Argv>".
	Step string
}

func (cmd Cmd) step() string {
	if cmd.Step != "" {
		return cmd.Step
	}
	return "run " + shortCommand(cmd.Argv)
}

// shortCommand is the start of a command line, for messages.
func shortCommand(argv []string) string {
	s := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, Join(argv))
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return "`" + s + "`"
}

const stderrKeep = 64 << 10

// Run runs cmd on the host over the host's connection (opened, or opened again, as needed) and
// returns when it has exited and its output is written. It fails with an *Error naming the host and
// step, wrapping *ExitError for a non-zero exit, ErrConnectionLost, ErrNoExitStatus, the connect
// error, or ctx's error. When ctx ends, the command is sent SIGKILL and its session is closed; sshd
// delivers signals only to sessions of non-root users (it skips privilege separation for root), so
// a root command goes on until it reads its closed standard input or writes to its closed output,
// as with the OpenSSH client.
func (c *Client) Run(ctx context.Context, cmd Cmd) error {
	step := cmd.step()
	if err := checkArgv(cmd.Argv); err != nil {
		return &Error{Host: c.name, Step: step, Err: err}
	}
	start := time.Now()
	res, err := c.run(ctx, cmd)
	status := "ok"
	var ee *ExitError
	switch {
	case errors.As(err, &ee):
		status = ee.Error()
		if i := strings.IndexByte(status, ':'); i >= 0 {
			status = status[:i]
		}
	case err != nil:
		status = err.Error()
	}
	d := time.Since(start)
	c.pool.log.Debug("ssh command", "host", c.name, "command", shortCommand(cmd.Argv), "status", status,
		"stdin_bytes", res.stdin, "duration", d.Round(time.Millisecond))
	c.pool.out.line(c.name, "exit", fmt.Sprintf("%s: %s after %s", shortCommand(cmd.Argv), status, d.Round(time.Millisecond)))
	if err != nil {
		return &Error{Host: c.name, Step: step, Err: err}
	}
	return nil
}

// Output runs argv and returns its standard output, at most max bytes (more is an error; the rest is
// read and dropped); max <= 0 means 16 MiB. Standard error goes to the run log.
func (c *Client) Output(ctx context.Context, max int, argv ...string) ([]byte, error) {
	if max <= 0 {
		max = 16 << 20
	}
	out := &capWriter{max: max}
	err := c.Run(ctx, Cmd{Argv: argv, Stdout: out})
	if err == nil && out.over {
		err = &Error{Host: c.name, Step: "run " + shortCommand(argv), Err: fmt.Errorf("standard output over %d bytes", max)}
	}
	return out.buf.Bytes(), err
}

type runResult struct {
	stdin int64 // bytes of standard input sent
}

func (c *Client) run(ctx context.Context, cmd Cmd) (res runResult, _ error) {
	select { // sshd allows MaxSessions sessions per connection
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	case <-ctx.Done():
		return res, ctx.Err()
	}
	cn, sess, err := c.session(ctx)
	if err != nil {
		return res, err
	}
	defer sess.Close()

	tail := &tailBuffer{max: stderrKeep}
	stdout := newGuard(cmd.Stdout, func() io.Writer { return c.pool.out.stream(c.name, "stdout") })
	stderr := newGuard(cmd.Stderr, func() io.Writer { return c.pool.out.stream(c.name, "stderr") })
	sess.Stdout = stdout
	sess.Stderr = io.MultiWriter(tail, stderr)
	var stdinDone chan error
	if cmd.Stdin != nil {
		w, err := sess.StdinPipe()
		if err != nil {
			return res, err
		}
		stdinDone = make(chan error, 1)
		counted := &countReader{r: cmd.Stdin}
		defer func() { res.stdin = counted.n.Load() }()
		if err := sess.Start(Join(cmd.Argv)); err != nil {
			return res, c.lost(cn, err)
		}
		go func() { // ends when the input ends, fails, or the session is gone
			_, err := io.Copy(w, counted)
			if err != nil {
				// Reported before the close: the remote end sees EOF only after it, so the
				// error is there when Wait returns.
				stdinDone <- &readError{err}
				w.Close()
				return
			}
			w.Close()
			stdinDone <- nil
		}()
	} else if err := sess.Start(Join(cmd.Argv)); err != nil {
		return res, c.lost(cn, err)
	}

	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }() // ends when the channel closes (command exit or connection loss)
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL)
		_ = sess.Close()
		t := time.NewTimer(c.pool.cfg.ConnectTimeout)
		defer t.Stop()
		select { // a hung server does not confirm the close: the keepalive ends that connection
		case <-waited:
		case <-t.C:
		}
		stdout.detach() // nothing reaches the caller's writers after Run returned
		stderr.detach()
		return res, ctx.Err()
	}
	stdout.flush()
	stderr.flush()
	var inErr error
	select {
	case e := <-stdinDone: // nil when there is no input
		// A command that exits early leaves input unread: the copy then fails writing to a closed
		// channel, which is no error of ours; a failing local reader is. A copy still blocked in
		// the caller's Read is left to end with it (see Cmd.Stdin).
		var re *readError
		if errors.As(e, &re) && !isClosedWrite(re.err) {
			inErr = fmt.Errorf("read standard input: %w", re.err)
		}
	default:
	}
	switch e := err.(type) {
	case nil:
	case *ssh.ExitError:
		ee := &ExitError{Code: e.ExitStatus(), Signal: e.Signal(), Stderr: tail.String()}
		if ee.Signal != "" {
			ee.Code = -1
		}
		return res, errors.Join(ee, inErr)
	case *ssh.ExitMissingError:
		if !cn.alive(c.pool.cfg.ConnectTimeout) {
			return res, c.lostReason(cn)
		}
		return res, ErrNoExitStatus
	default:
		return res, c.lost(cn, err)
	}
	if inErr != nil {
		return res, inErr
	}
	if err := stdout.err(); err != nil {
		return res, fmt.Errorf("write standard output: %w", err)
	}
	if err := stderr.err(); err != nil {
		return res, fmt.Errorf("write standard error: %w", err)
	}
	return res, nil
}

// session opens a session on the live connection; a connection found dead on the way is replaced
// once.
func (c *Client) session(ctx context.Context) (*conn, *ssh.Session, error) {
	for attempt := 0; ; attempt++ {
		cn, err := c.connect(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("connect: %w", err)
		}
		sess, err := openSession(ctx, cn)
		if err == nil {
			return cn, sess, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if attempt > 0 || !cn.gone() && cn.alive(c.pool.cfg.ConnectTimeout) {
			return nil, nil, fmt.Errorf("open session: %w", c.lost(cn, err))
		}
		c.pool.log.Info("ssh connection died, reconnecting", "host", c.name, "reason", cn.why())
	}
}

// openSession opens a session; on a hung server that waits until ctx ends or the keepalive closes
// the connection, and a session opened after ctx ended is closed.
func openSession(ctx context.Context, cn *conn) (*ssh.Session, error) {
	type result struct {
		s   *ssh.Session
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := cn.ssh.NewSession()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// lost wraps err with ErrConnectionLost when the connection is gone.
func (c *Client) lost(cn *conn, err error) error {
	if cn.gone() || !cn.alive(c.pool.cfg.ConnectTimeout) {
		return fmt.Errorf("%w: %w", c.lostReason(cn), err)
	}
	return err
}

func (c *Client) lostReason(cn *conn) error {
	<-cn.done
	why := cn.why()
	if why == nil || errors.Is(why, ErrConnectionLost) {
		if why == nil {
			return ErrConnectionLost
		}
		return why
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, why)
}

type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }

func isClosedWrite(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || strings.Contains(err.Error(), "closed")
}

type countReader struct {
	r io.Reader
	n atomic.Int64
}

func (r *countReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// guard writes to a caller's writer (or the run log) and never fails: after the first write error it
// drops the rest, so the session's output keeps draining and the command can finish.
type guard struct {
	mu     sync.Mutex
	w      io.Writer
	failed error
}

func newGuard(w io.Writer, fallback func() io.Writer) *guard {
	if w == nil {
		w = fallback()
	}
	return &guard{w: w}
}

func (g *guard) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed == nil {
		if _, err := g.w.Write(p); err != nil {
			g.failed = err
		}
	}
	return len(p), nil
}

// detach drops whatever is written from now on.
func (g *guard) detach() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.w = io.Discard
}

func (g *guard) flush() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.w.(interface{ Flush() }); ok {
		f.Flush()
	}
}

func (g *guard) err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failed
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
	cut bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cut {
		return "[...] " + string(t.buf)
	}
	return string(t.buf)
}

// capWriter keeps the first max bytes and notes whether there were more.
type capWriter struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); len(p) > room {
		w.over = true
		w.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	w.buf.Write(p)
	return len(p), nil
}

// runLog is the run log: whole lines, "host stream| text", from any number of commands at once.
type runLog struct {
	mu sync.Mutex
	w  io.Writer
}

func newRunLog(w io.Writer) *runLog {
	if w == nil {
		w = io.Discard
	}
	return &runLog{w: w}
}

func (l *runLog) line(host, stream, text string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s %s| %s\n", host, stream, text)
}

// stream is a writer that cuts what it gets into lines for the run log; Flush writes a last
// unterminated line.
func (l *runLog) stream(host, name string) io.Writer {
	if l.w == io.Discard {
		return io.Discard
	}
	return &lineWriter{log: l, host: host, name: name}
}

type lineWriter struct {
	log        *runLog
	host, name string
	partial    []byte
}

const maxLine = 16 << 10

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			if len(w.partial) >= maxLine {
				w.Flush()
			}
			break
		}
		w.partial = append(w.partial, p[:i]...)
		w.log.line(w.host, w.name, string(w.partial))
		w.partial = w.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineWriter) Flush() {
	if len(w.partial) == 0 {
		return
	}
	w.log.line(w.host, w.name, string(w.partial))
	w.partial = w.partial[:0]
}
