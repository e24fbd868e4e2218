package events

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// The limits on what Load reads: an events directory is repository content, and a pull request's
// commit is hostile input. A log of a few hundred nodes is well under 1 MiB in all; the limits leave
// room for logs a hundred times larger and still bound the memory a run can be made to use.
const (
	// MaxFileSize is the largest event file, in bytes (1 MiB): a .json file holds one event, an NDJSON
	// file can hold thousands.
	MaxFileSize = 1 << 20
	// MaxTotalSize bounds the event files of one directory together, in bytes (64 MiB).
	MaxTotalSize = 64 << 20
	// MaxFiles is the most event files one directory (with its subdirectories) may hold.
	MaxFiles = 10000
	// MaxEntries is the most directory entries, of any kind, Load looks at under the events directory.
	MaxEntries = 100000
)

// Limits bound what Load reads; a zero field takes the default constant of the same name (MaxFileSize,
// MaxTotalSize, MaxFiles, MaxEntries).
type Limits struct {
	FileSize  int64
	TotalSize int64
	Files     int
	Entries   int
}

func (l Limits) withDefaults() Limits {
	if l.FileSize <= 0 {
		l.FileSize = MaxFileSize
	}
	if l.TotalSize <= 0 {
		l.TotalSize = MaxTotalSize
	}
	if l.Files <= 0 {
		l.Files = MaxFiles
	}
	if l.Entries <= 0 {
		l.Entries = MaxEntries
	}
	return l
}

// Extensions of the files Load reads; others (README.md, ...) are ignored.
const (
	extJSON   = ".json"
	extNDJSON = ".ndjson"
	extJSONL  = ".jsonl"
)

func eventFile(name string) bool {
	switch filepath.Ext(name) {
	case extJSON, extNDJSON, extJSONL:
		return true
	}
	return false
}

// Load reads every event file under dir with the default limits; see Limits.Load.
func Load(ctx context.Context, dir string) ([]Event, Problems) {
	return Limits{}.Load(ctx, dir)
}

// Load reads every event file under dir (recursively, in lexical order), checks each envelope and the
// log as a whole, and returns the events sorted by sequence with every problem found. Events with a
// broken envelope are left out; the rest are returned even when there are problems, so callers can
// report more in the same run.
//
// Only regular files and directories are read. dir itself and everything under it must not be a
// symbolic link (neither is followed: a link could name any file of the host); an event file (*.json,
// *.ndjson, *.jsonl) that is a FIFO, socket, device or directory is a problem and is never opened for
// reading in a way that could block. Reads stop at the limits, each a problem naming the path, and
// between files when ctx is done: the problem then wraps ctx.Err(), so errors.Is(problems,
// context.Canceled) holds. The directories above dir are the caller's: a workspace made from a
// commit must not let them lead out of it.
func (l Limits) Load(ctx context.Context, dir string) ([]Event, Problems) {
	evs, problems := l.load(ctx, dir)
	for i := range evs {
		evs[i].Source.File = filepath.Join(dir, evs[i].Source.File)
	}
	for i := range problems {
		problems[i].Source.File = filepath.Join(dir, problems[i].Source.File)
	}
	return evs, problems
}

// load is Load with sources relative to dir, as the problems' messages name them.
func (l Limits) load(ctx context.Context, dir string) ([]Event, Problems) {
	l = l.withDefaults()
	files, problems := l.walk(ctx, dir)
	if len(problems) > 0 {
		return nil, problems
	}
	if len(files) == 0 {
		return nil, Problems{{Message: "no event files (*.json, *.ndjson, *.jsonl)"}}
	}
	var parsed [][]Event
	var total int64
	count := 0
	for _, name := range files {
		if err := ctx.Err(); err != nil {
			return nil, append(problems, Problem{Source: Source{File: name}, Message: "reading the events: " + err.Error(), Err: err})
		}
		data, err := readFile(ctx, filepath.Join(dir, name), l.FileSize, l.TotalSize-total)
		if err != nil {
			var le *limitError
			if errors.As(err, &le) && le.total {
				return nil, append(problems, Problem{Source: Source{File: name}, Message: fmt.Sprintf("the event files are larger than %s together (a limit of cimdeploy): reading stopped at this file", size(l.TotalSize))})
			}
			problems = append(problems, Problem{Source: Source{File: name}, Message: err.Error(), Err: errors.Unwrap(err)})
			if ctx.Err() != nil {
				return nil, problems
			}
			continue
		}
		total += int64(len(data))
		evs, ps := Parse(name, data)
		parsed = append(parsed, evs)
		count += len(evs)
		problems = append(problems, ps...)
	}
	all := make([]Event, 0, count)
	for _, evs := range parsed {
		all = append(all, evs...)
	}
	sorted, ps := Order(all)
	// Events of unknown types keep their place in the order checks, then leave: their problem is reported.
	kept := sorted[:0]
	for _, ev := range sorted {
		if known(ev.Type) {
			kept = append(kept, ev)
		}
	}
	return kept, append(problems, ps...)
}

// walk lists the event files under dir, relative to it and sorted, refusing what Load must not read.
func (l Limits) walk(ctx context.Context, dir string) ([]string, Problems) {
	var files []string
	var problems Problems
	entries := 0
	pending := []string{"."}
	for len(pending) > 0 {
		rel := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		if err := ctx.Err(); err != nil {
			return nil, Problems{{Source: Source{File: rel}, Message: "reading the events: " + err.Error(), Err: err}}
		}
		names, err := readDir(filepath.Join(dir, rel), l.Entries-entries, l.Entries)
		if err != nil {
			return nil, append(problems, Problem{Source: Source{File: rel}, Message: err.Error(), Err: errors.Unwrap(err)})
		}
		entries += len(names)
		var subdirs []string
		for _, e := range names {
			name := filepath.Join(rel, e.Name())
			p := Problem{Source: Source{File: name}}
			switch t := e.Type(); {
			case t&fs.ModeSymlink != 0:
				p.Message = "a symbolic link: the events directory holds only regular files and directories (links are not followed)"
				problems = append(problems, p)
			case t.IsDir() && eventFile(name):
				p.Message = "a directory where an event file is expected"
				problems = append(problems, p)
			case t.IsDir():
				subdirs = append(subdirs, name)
			case !eventFile(name):
			case !t.IsRegular():
				p.Message = fmt.Sprintf("not a regular file (%s): an event file must be one", kind(t))
				problems = append(problems, p)
			default:
				files = append(files, name)
				if len(files) > l.Files {
					return nil, append(problems, Problem{Message: fmt.Sprintf("more than %d event files (a limit of cimdeploy)", l.Files)})
				}
			}
		}
		slices.Sort(subdirs)
		for _, s := range slices.Backward(subdirs) {
			pending = append(pending, s)
		}
	}
	slices.Sort(files)
	return files, problems
}

// readDir lists the directory path, which must not be a symbolic link, reading at most left entries
// (of limit in all).
func readDir(path string, left, limit int) ([]fs.DirEntry, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, openError(path, err, "directory")
	}
	defer f.Close()
	var all []fs.DirEntry
	for {
		batch, err := f.ReadDir(256)
		all = append(all, batch...)
		if len(all) > left {
			return nil, fmt.Errorf("more than %d entries under the events directory (a limit of cimdeploy)", limit)
		}
		if err == io.EOF || (err == nil && len(batch) == 0) {
			return all, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list the events directory: %w", err)
		}
	}
}

// openError describes why path could not be opened as a what ("file", "directory").
func openError(path string, err error, what string) error {
	var st os.FileInfo
	if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
		if fi, lerr := os.Lstat(path); lerr == nil {
			st = fi
		}
	}
	switch {
	case st != nil && st.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("a symbolic link where the events %s is expected (links are not followed): %w", what, err)
	case st != nil:
		return fmt.Errorf("not a %s (%s): %w", what, kind(st.Mode().Type()), err)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) { // the path is the problem's
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("the events %s does not exist: %w", what, pe.Err)
		}
		return fmt.Errorf("open: %w", pe.Err)
	}
	return err
}

// limitError is a file over a size limit: its own (total false) or what is left of the directory's.
type limitError struct {
	limit int64
	total bool
}

func (e *limitError) Error() string {
	if e.total {
		return fmt.Sprintf("over the limit of the event files together (%s left)", size(e.limit))
	}
	return fmt.Sprintf("larger than %s (a limit of cimdeploy for one event file)", size(e.limit))
}

// readFile reads the regular file path, at most limit bytes of it and at most left: it opens path
// without following a link and without blocking (a FIFO would), checks what it opened, and reads
// through a reader that stops at the limit and when ctx is done.
func readFile(ctx context.Context, path string, limit, left int64) ([]byte, error) {
	return readFileInto(ctx, path, limit, left, nil)
}

// readFileInto is readFile reading into buf's storage when it is large enough (Stream reuses one
// buffer for all the files).
func readFileInto(ctx context.Context, path string, limit, left int64, buf []byte) ([]byte, error) {
	// Look before opening: opening a device can have effects of its own.
	if fi, err := os.Lstat(path); err != nil {
		return nil, openError(path, err, "file")
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s): an event file must be one", kind(fi.Mode().Type()))
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, openError(path, err, "file")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() { // swapped since Lstat
		return nil, fmt.Errorf("not a regular file (%s): an event file must be one", kind(fi.Mode().Type()))
	}
	over := func(n int64) error {
		if n > limit {
			return &limitError{limit: limit}
		}
		if n > left {
			return &limitError{limit: max(left, 0), total: true}
		}
		return nil
	}
	if err := over(fi.Size()); err != nil {
		return nil, err
	}
	bound := min(limit, left) + 1 // one byte more tells a file over the limit
	data, err := readAll(io.LimitReader(ctxReader{ctx, f}, bound), buf[:0], fi.Size()+1)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if err := over(int64(len(data))); err != nil {
		return nil, err
	}
	return data, nil
}

// readAll is io.ReadAll appending to buf, with room made first for the size the file says it has (and
// one byte more, to see its end), so that a file is read without growing the buffer again and again.
func readAll(r io.Reader, buf []byte, size int64) ([]byte, error) {
	buf = slices.Grow(buf, int(size))
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 512)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// ctxReader stops reading when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func kind(t fs.FileMode) string {
	switch {
	case t&fs.ModeSymlink != 0:
		return "a symbolic link"
	case t&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeCharDevice != 0:
		return "a character device"
	case t&fs.ModeDevice != 0:
		return "a block device"
	case t.IsDir():
		return "a directory"
	case t.IsRegular():
		return "a regular file"
	}
	return "a special file"
}

func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
