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
	// sizesScript prints the size of every template of node $2 in directory $1.
	sizesScript = `for f in "$1/$2"-` + sha256Glob + `.tar.xz; do
  if [ -f "$f" ]; then stat -c %s -- "$f"; fi
done`
	sha256Glob = "????????????????????????????????????????????????????????????????"
	// writeScript is the whole transfer on the host, in one command: it removes parts of node $2's
	// templates in directory $1 that nothing wrote to for an hour (left by cut connections); exits 4
	// printing the free bytes when $1 has fewer than $4 free; writes standard input to the new part
	// $3, which must not exist yet; then syncs the part to disk and, meanwhile, reads it back from the
	// page cache and prints its sha256. Reading back was measured cheaper than hashing on the way in
	// (tee into openssl): on 2 CPUs, the pipe between them costs more than the second read.
	writeScript = `set -eu
find "$1" -maxdepth 1 -type f -name ".$2-*.part" -mmin +60 -exec rm -f -- {} +
fs=$(stat -f -c '%a %S' -- "$1")
free=$(( ${fs% *} * ${fs#* } ))
if [ "$free" -lt "$4" ]; then echo "$free"; exit 4; fi
umask 022
set -C
cat >"$3"
` + sumFunc + `
sync -- "$3" & s=$!
h=$(sum "$3")
wait "$s"
echo "$h"`
	// renameScript puts the verified part $1 under its final name $2 and syncs the directory $3.
	renameScript = `set -eu
mv -f -T -- "$1" "$2"
sync -- "$3"`
)

// UploadTemplate puts t on the Proxmox host as TemplateDir/<node>-<sha256>.tar.xz.
//
// A file of that name with the same sha256 is kept and nothing is sent. Otherwise the file is read
// once and streamed over the SSH connection (cat on the host; measured faster than SFTP with
// concurrent writes and than scp, see BenchmarkUpload) into a hidden .part file next to it, hashed
// here as it is read; the same remote command checks the free space first and, after the stream,
// syncs the part to disk while it reads it back and hashes it on the host. Only when that sha256 is
// the one of the bytes sent (and the caller's, if given) is the part renamed to its final name, so
// the final name never holds a partial or corrupt file. When the caller gives no sha256 and the host
// has a template of the node of the same size (so it may have this one), the file is hashed before,
// to skip the copy when it is there. A failed upload removes its part; a part a cut connection left
// behind is removed by a later upload of the node's templates once nothing wrote to it for an hour.
// Safe for concurrent use with different nodes.
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

// upload runs the steps of UploadTemplate: 1. check t and open its file; 2. skip it when the host has
// it; 3. stream it into a part (free space, write, sync, host sha256: one command); 4. compare the
// sha256s; 5. rename the part.
func (p *PCT) upload(ctx context.Context, t Template) (Uploaded, error) {
	var up Uploaded
	f, err := p.open(t, &up)
	if err != nil {
		return up, err
	}
	defer f.Close()
	if skip, err := p.have(ctx, t, f, &up); err != nil || skip {
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
	sent, onHost, err := p.write(ctx, f, t.Node, part, up.Size)
	up.Sent = sent.n
	if err != nil {
		return fail(err)
	}
	if up.Sent != up.Size {
		return fail(fmt.Errorf("%s changed while it was sent: %d bytes, want %d", t.File, up.Sent, up.Size))
	}
	switch {
	case up.SHA256 == "":
		up.SHA256 = sent.sha256
		p.name(&up, t.Node)
	case sent.sha256 != up.SHA256:
		return fail(fmt.Errorf("%s of node %s: %w: the file has %s, the template names %s", t.File, t.Node, ErrChecksum, sent.sha256, up.SHA256))
	}
	if onHost != up.SHA256 {
		return fail(fmt.Errorf("verify %s (%s of node %s): %w: %s on the host, %s here", part, t.File, t.Node, ErrChecksum, onHost, up.SHA256))
	}
	if err := p.host.Run(ctx, Cmd{Argv: Script(renameScript, part, up.Path, p.dir), Step: "rename " + part}); err != nil {
		return fail(err)
	}
	return up, nil
}

// open checks t, opens its file and sets up's Size and SHA256 (the caller's, if any).
func (p *PCT) open(t Template, up *Uploaded) (*os.File, error) {
	if !nodeName.MatchString(t.Node) {
		return nil, fmt.Errorf("node name %q: want letters, digits, '.', '_', '-'", t.Node)
	}
	up.SHA256 = strings.ToLower(t.SHA256)
	if up.SHA256 != "" && (len(up.SHA256) != 64 || strings.Trim(up.SHA256, "0123456789abcdef") != "") {
		return nil, fmt.Errorf("sha256 %q: want 64 hex digits", t.SHA256)
	}
	f, err := os.Open(t.File)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", t.File)
	}
	up.Size = st.Size()
	if up.SHA256 != "" {
		p.name(up, t.Node)
	}
	return f, nil
}

// have reports whether the host has t already (up.Skipped). Without the caller's sha256, it asks for
// the sizes of the node's templates first: only one of the same size can be this one, and only then
// is the file hashed before the copy (and f rewound).
func (p *PCT) have(ctx context.Context, t Template, f *os.File, up *Uploaded) (bool, error) {
	if up.SHA256 == "" {
		sameSize, err := p.hasSize(ctx, t.Node, up.Size)
		if err != nil || !sameSize {
			return false, err
		}
		if up.SHA256, err = hashFile(ctx, f); err != nil {
			return false, fmt.Errorf("sha256 of %s: %w", t.File, err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return false, err
		}
		p.name(up, t.Node)
	}
	have, err := p.remoteSHA256(ctx, up.Path, hashScript)
	if err != nil {
		return false, err
	}
	up.Skipped = have == up.SHA256
	return up.Skipped, nil
}

// sentFile is what write read from the local file: bytes and their sha256.
type sentFile struct {
	n      int64
	sha256 string
}

// write streams f (node's template) into the new part on the host with writeScript, hashing it as it is read (one read
// of the file), and returns what it sent and the part's sha256 on the host.
func (p *PCT) write(ctx context.Context, f io.Reader, node, part string, size int64) (sentFile, string, error) {
	h := sha256.New()
	counted := &countReader{r: io.TeeReader(f, h)}
	out := &capWriter{max: 1024}
	err := p.host.Run(ctx, Cmd{Argv: Script(writeScript, p.dir, node, part, strconv.FormatInt(size, 10)),
		Stdin: counted, Stdout: out, Step: "write " + part})
	sent := sentFile{n: counted.n.Load(), sha256: hex.EncodeToString(h.Sum(nil))}
	var ee *ExitError
	if errors.As(err, &ee) && ee.Code == 4 {
		free, perr := strconv.ParseInt(strings.TrimSpace(out.buf.String()), 10, 64)
		if perr != nil {
			return sent, "", fmt.Errorf("%w in %s: the template needs %s", ErrNoSpace, p.dir, byteSize(size))
		}
		return sent, "", fmt.Errorf("%w in %s: %s free, the template needs %s", ErrNoSpace, p.dir, byteSize(free), byteSize(size))
	}
	if err != nil {
		return sent, "", err
	}
	onHost := strings.TrimSpace(out.buf.String())
	if len(onHost) != 64 || strings.Trim(onHost, "0123456789abcdef") != "" {
		return sent, "", fmt.Errorf("sha256 of %s: unexpected output %q", part, out.buf.String())
	}
	return sent, onHost, nil
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
