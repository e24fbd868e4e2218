package remote

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Template is a node's LXC template: a local .tar.xz file, such as the tarball nixos-generators builds.
type Template struct {
	// Node is the node the template is for; the name on Proxmox is <Node>-<sha256>.tar.xz.
	Node string
	// File is the local file.
	File string
	// SHA256 is File's sha256 in hex when the caller knows it; empty: UploadTemplate computes it.
	SHA256 string
}

// Uploaded is where a template is on Proxmox and what UploadTemplate did to put it there.
type Uploaded struct {
	Name     string        `json:"name"`   // nats-1-<sha256>.tar.xz
	Path     string        `json:"path"`   // absolute path on the Proxmox host
	Volume   string        `json:"volume"` // <storage>:vztmpl/<name>, as pct create takes it
	SHA256   string        `json:"sha256"`
	Size     int64         `json:"size"`
	Skipped  bool          `json:"skipped"` // the host had it already, with the same sha256: nothing sent
	Sent     int64         `json:"sent"`    // bytes sent
	Duration time.Duration `json:"duration_ns"`
}

// ErrNoSpace is an upload that does not fit in the free space of the template directory.
var ErrNoSpace = errors.New("not enough free space")

// ErrChecksum is a copy whose sha256 on the host differs from the local file's.
var ErrChecksum = errors.New("sha256 mismatch")

var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// TemplateName is the content-addressed name of a template of node with the given sha256.
func TemplateName(node, sha256 string) string { return node + "-" + sha256 + ".tar.xz" }

// The scripts the upload runs, each with its values as positional parameters only.
const (
	// hashScript prints the sha256 of $1, or exits 3 when there is no such file. openssl uses the
	// CPU's SHA instructions where coreutils' sha256sum (9.1, Debian 12) does not: 3x faster.
	hashScript = `[ -f "$1" ] || exit 3
` + sumFunc + `
sum "$1"`
	sumFunc = `sum() {
  if command -v openssl >/dev/null 2>&1; then out=$(openssl dgst -sha256 -r "$1") || return
  else out=$(sha256sum -b -- "$1") || return
  fi
  echo "${out%% *}"
}`
	// verifyScript syncs the part $1 to disk and, meanwhile, reads it back and prints its sha256.
	verifyScript = `[ -f "$1" ] || exit 3
` + sumFunc + `
sync -- "$1" & s=$!
h=$(sum "$1") || exit
wait "$s" || exit
echo "$h"`
	// sizesScript prints the size of every template of node $2 in directory $1.
	sizesScript = `for f in "$1/$2"-` + sha256Glob + `.tar.xz; do
  if [ -f "$f" ]; then stat -c %s -- "$f"; fi
done`
	sha256Glob = "????????????????????????????????????????????????????????????????"
	// writeScript removes parts of node $2's templates in directory $1 that nothing wrote to for an
	// hour (left by cut connections) and writes standard input to the new part $3, which must not
	// exist yet.
	writeScript = `set -eu
find "$1" -maxdepth 1 -type f -name ".$2-*.part" -mmin +60 -exec rm -f -- {} +
umask 022
set -C
cat >"$3"`
	// renameScript puts the verified part $1 under its final name $2 and syncs the directory $3.
	renameScript = `set -eu
mv -f -T -- "$1" "$2"
sync -- "$3"`
)

// UploadTemplate puts t on the Proxmox host as TemplateDir/<node>-<sha256>.tar.xz.
//
// A file of that name with the same sha256 is kept and nothing is sent. Otherwise the file is
// streamed over the SSH connection (cat on the host; measured faster than SFTP with concurrent
// writes and than scp, see BenchmarkUpload) into a hidden .part file next to it, then synced to
// disk and, meanwhile, read back and hashed on the host; only when that sha256 is the local one is
// the part renamed to its final name, so the final name never holds a partial or corrupt file.
// When the caller gives no sha256 and the host has no template of the node of the same size (so it
// cannot have this one), the file is hashed while it is sent (by a second reader) instead of before.
// A failed upload removes its part; a part a cut connection left behind is removed by a later upload
// of the node's templates once nothing wrote to it for an hour. Safe for concurrent use with
// different nodes.
func (p *PCT) UploadTemplate(ctx context.Context, t Template) (Uploaded, error) {
	start := time.Now()
	up, err := p.upload(ctx, t)
	up.Duration = time.Since(start)
	if err != nil {
		return up, wrapErr(p.host.Name(), "upload template "+t.Node, err)
	}
	p.log.Info("template uploaded", "host", p.host.Name(), "node", t.Node, "name", up.Name, "skipped", up.Skipped,
		"sent", up.Sent, "duration", up.Duration.Round(time.Millisecond))
	return up, nil
}

func (p *PCT) upload(ctx context.Context, t Template) (Uploaded, error) {
	var up Uploaded
	if !nodeName.MatchString(t.Node) {
		return up, fmt.Errorf("node name %q: want letters, digits, '.', '_', '-'", t.Node)
	}
	f, err := os.Open(t.File)
	if err != nil {
		return up, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return up, err
	}
	if !st.Mode().IsRegular() {
		return up, fmt.Errorf("%s: not a regular file", t.File)
	}
	up.Size = st.Size()
	up.SHA256 = strings.ToLower(t.SHA256)
	if up.SHA256 != "" && (len(up.SHA256) != 64 || strings.Trim(up.SHA256, "0123456789abcdef") != "") {
		return up, fmt.Errorf("sha256 %q: want 64 hex digits", t.SHA256)
	}
	if up.SHA256 == "" {
		sameSize, err := p.hasSize(ctx, t.Node, up.Size)
		if err != nil {
			return up, err
		}
		if sameSize { // it may be there: the name decides, so hash first
			if up.SHA256, err = hashFile(ctx, f); err != nil {
				return up, fmt.Errorf("sha256 of %s: %w", t.File, err)
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return up, err
			}
		}
	}
	if up.SHA256 != "" {
		p.name(&up, t.Node)
		have, err := p.remoteSHA256(ctx, up.Path, hashScript)
		if err != nil {
			return up, err
		}
		if have == up.SHA256 {
			up.Skipped = true
			return up, nil
		}
	}
	if err := p.checkSpace(ctx, up.Size); err != nil {
		return up, err
	}
	var suffix [8]byte
	_, _ = rand.Read(suffix[:])
	part := path.Join(p.dir, "."+t.Node+"-"+hex.EncodeToString(suffix[:])+".part")
	fail := func(err error) (Uploaded, error) {
		// The part goes also when ctx ended or the connection was cut: a new connection removes it.
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cleanupTimeout)
		defer cancel()
		if rmErr := p.host.Run(cleanup, Cmd{Argv: []string{"rm", "-f", "--", part}, Step: "remove " + part}); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
		return up, err
	}
	// Without a sha256 yet, the file is hashed while it is sent: by a second reader of its own, so
	// the hashing runs beside the sending instead of in its way. Both read the same immutable file;
	// if it changed meanwhile, the check on the host fails.
	type hashed struct {
		sum string
		err error
	}
	var hashing chan hashed
	if up.SHA256 == "" {
		hashing = make(chan hashed, 1)
		hctx, cancel := context.WithCancel(ctx)
		defer func() { // the hashing stops with the upload, and is waited for
			cancel()
			if hashing != nil {
				<-hashing
			}
		}()
		go func() {
			g, err := os.Open(t.File)
			if err != nil {
				hashing <- hashed{err: err}
				return
			}
			defer g.Close()
			sum, err := hashFile(hctx, g)
			hashing <- hashed{sum, err}
		}()
	}
	counted := &countReader{r: f}
	err = p.host.Run(ctx, Cmd{Argv: Script(writeScript, p.dir, t.Node, part), Stdin: counted, Step: "write " + part})
	up.Sent = counted.n.Load()
	if err != nil {
		return fail(err)
	}
	if hashing != nil {
		h := <-hashing
		hashing = nil
		if h.err != nil {
			return fail(fmt.Errorf("sha256 of %s: %w", t.File, h.err))
		}
		if up.Sent != up.Size {
			return fail(fmt.Errorf("%s changed while it was sent: %d bytes, want %d", t.File, up.Sent, up.Size))
		}
		up.SHA256 = h.sum
		p.name(&up, t.Node)
	}
	// Read back after the copy. Hashing the stream as it is written (tee into openssl) instead was
	// measured slower (BenchmarkUpload, 2 CPUs): tee's small buffers cost more than the read-back.
	got, err := p.remoteSHA256(ctx, part, verifyScript)
	if err != nil {
		return fail(err)
	}
	if got != up.SHA256 {
		return fail(fmt.Errorf("verify %s: %w: %s on the host, %s here", part, ErrChecksum, got, up.SHA256))
	}
	if err := p.host.Run(ctx, Cmd{Argv: Script(renameScript, part, up.Path, p.dir), Step: "rename " + part}); err != nil {
		return fail(err)
	}
	return up, nil
}

// name sets the content-addressed name, path and volume of up from its SHA256.
func (p *PCT) name(up *Uploaded, node string) {
	up.Name = TemplateName(node, up.SHA256)
	up.Path = path.Join(p.dir, up.Name)
	up.Volume = p.storage + ":vztmpl/" + up.Name
}

// hasSize reports whether the host has a template of node of exactly size bytes.
func (p *PCT) hasSize(ctx context.Context, node string, size int64) (bool, error) {
	out, err := p.host.Output(ctx, 1<<20, Script(sizesScript, p.dir, node)...)
	if err != nil {
		return false, err
	}
	for _, f := range strings.Fields(string(out)) {
		if n, err := strconv.ParseInt(f, 10, 64); err == nil && n == size {
			return true, nil
		}
	}
	return false, nil
}

// remoteSHA256 is the sha256 of file on the Proxmox host by script (hashScript, verifyScript), ""
// when there is no such file.
func (p *PCT) remoteSHA256(ctx context.Context, file, script string) (string, error) {
	out, err := p.host.Output(ctx, 1024, Script(script, file)...)
	var ee *ExitError
	if errors.As(err, &ee) && ee.Code == 3 {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	sum := strings.TrimSpace(string(out))
	if len(sum) != 64 {
		return "", fmt.Errorf("sha256 of %s: unexpected output %q", file, out)
	}
	return sum, nil
}

// checkSpace fails with ErrNoSpace when the template directory has less than size bytes free.
func (p *PCT) checkSpace(ctx context.Context, size int64) error {
	out, err := p.host.Output(ctx, 1024, "stat", "-f", "-c", "%a %S", "--", p.dir)
	if err != nil {
		return err
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return fmt.Errorf("free space of %s: unexpected output %q", p.dir, out)
	}
	blocks, err1 := strconv.ParseInt(f[0], 10, 64)
	bsize, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("free space of %s: unexpected output %q", p.dir, out)
	}
	if free := blocks * bsize; free < size {
		return fmt.Errorf("%w in %s: %s free, the template needs %s", ErrNoSpace, p.dir, byteSize(free), byteSize(size))
	}
	return nil
}

// hashFile is the hex sha256 of r; it stops when ctx ends.
func hashFile(ctx context.Context, r io.Reader) (string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", err
		}
	}
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
