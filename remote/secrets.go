package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

// MaxSecretSize bounds one secret file (a PEM certificate or key is a few KiB): a larger file is
// refused, not read.
const MaxSecretSize = 64 << 10

// SecretsDir installs a node's secrets from a local directory laid out <Dir>/<node>/<file> into
// RemoteDir on the node: each file mode 0400, owned by Owner (and Owner's group), written to a
// temporary file in RemoteDir and renamed over the old one, so a reader sees the old file or the new
// one, never a part. RemoteDir is made mode 0700, owned by Owner. Secret contents appear in no log,
// error or command line: they reach the node on the command's standard input. Safe for concurrent use.
type SecretsDir struct {
	Dir       string   // local directory: <Dir>/<node>/<file>
	Files     []string // the file names every node needs
	RemoteDir string   // absolute directory on the node, outside the Nix store
	Owner     string   // user that owns the files on the node (the service's user)
}

// ErrSecretMissing: a node's secret file is not in the secrets directory.
var ErrSecretMissing = errors.New("secret missing")

var secretName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Check is the pre-flight of node: every file is a regular file of at most MaxSecretSize bytes in
// <Dir>/<node>. The error names the node and the file, wrapping ErrSecretMissing when it is absent.
func (s SecretsDir) Check(node string) error {
	_, err := s.read(node)
	return err
}

// read reads node's files, bounded.
func (s SecretsDir) read(node string) (map[string][]byte, error) {
	if !nodeName.MatchString(node) {
		return nil, fmt.Errorf("secrets of node %q: not a node name", node)
	}
	out := map[string][]byte{}
	for _, name := range s.Files {
		if !secretName.MatchString(name) {
			return nil, fmt.Errorf("secrets of node %s: file name %q: want letters, digits, '.', '_', '-'", node, name)
		}
		file := filepath.Join(s.Dir, node, name)
		data, err := readSecret(file)
		if err != nil {
			return nil, fmt.Errorf("secrets of node %s: %s: %w", node, name, err)
		}
		out[name] = data
	}
	return out, nil
}

func readSecret(file string) ([]byte, error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrSecretMissing, file)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", file)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSecretSize+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", file, err)
	case len(data) > MaxSecretSize:
		return nil, fmt.Errorf("%s is larger than %d bytes", file, MaxSecretSize)
	case len(data) == 0:
		return nil, fmt.Errorf("%s is empty", file)
	}
	return data, nil
}

// installSecretsScript writes the files named in its arguments ($1 the directory, $2 the owner, then
// a name and a size in bytes for each file) from standard input, one after the other, owned by the
// owner, mode 0400: each into a temporary directory beside them (checked for its size), then all
// renamed into the directory, each rename atomic. One command for all of a node's files: one
// session's set-up, not one per file. The values arrive as arguments, never as shell code; the
// contents on standard input only. head -c reads no more than it writes (coreutils).
const installSecretsScript = `set -eu
dir=$1 owner=$2
shift 2
umask 077
mkdir -p -- "$dir"
chown -- "$owner:" "$dir"
chmod 0700 -- "$dir"
work=$(mktemp -d -- "$dir/.install.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
n=$#
i=0
while [ "$i" -lt "$n" ]; do
	name=$1 size=$2
	shift 2
	head -c "$size" >"$work/$name"
	got=$(wc -c <"$work/$name")
	if [ "$got" -ne "$size" ]; then
		echo "$name: $got of $size bytes arrived" >&2
		exit 1
	fi
	set -- "$@" "$name"
	i=$((i + 2))
done
cd -- "$work"
chown -- "$owner:" "$@"
chmod 0400 -- "$@"
mv -f -t "$dir" -- "$@"
`

// Install reads node's files (as Check does) and writes them all on the node through r, in one
// command (installSecretsScript).
func (s SecretsDir) Install(ctx context.Context, node string, r Runner) error {
	files, err := s.read(node)
	if err != nil {
		return err
	}
	if !filepath.IsAbs(s.RemoteDir) || filepath.Clean(s.RemoteDir) != s.RemoteDir {
		return fmt.Errorf("secrets directory %q on node %s: want a clean absolute path", s.RemoteDir, node)
	}
	if len(s.Files) == 0 {
		return nil
	}
	args := []string{s.RemoteDir, s.Owner}
	var stdin bytes.Buffer
	for _, name := range s.Files {
		args = append(args, name, strconv.Itoa(len(files[name])))
		stdin.Write(files[name])
	}
	err = r.Run(ctx, Cmd{Argv: Script(installSecretsScript, args...), Stdin: &stdin, Stdout: io.Discard,
		Step: fmt.Sprintf("install %d secrets in %s", len(s.Files), s.RemoteDir)})
	if err != nil {
		return fmt.Errorf("install secrets of node %s in %s: %w", node, s.RemoteDir, err)
	}
	return nil
}
