package remote

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// knownHostsMu serialises this process's rewrites of known_hosts files.
var knownHostsMu sync.Mutex

// PinHostKey makes known_hosts file vouch for key, and only key, as the host key of addr (host or
// host:port, as dialled): every line naming addr is dropped (a name in a list of several is taken out
// of the list; a hashed name is matched by its HMAC), then one line "addr key" is added. Lines with a
// marker (@cert-authority, @revoked), wildcard patterns and comments are kept as they are. The file
// is replaced atomically (a temp file in its directory, synced, renamed over it) and keeps its mode.
// Concurrent calls in one process take turns; other writers of the file are not locked out.
func PinHostKey(file, addr string, key ssh.PublicKey) error {
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	name := knownhosts.Normalize(addr)
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("pin host key of %s: %w", name, err)
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(file); err == nil {
		mode = fi.Mode().Perm()
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if line, keep := unpinLine(sc.Text(), name); keep {
			out.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("pin host key of %s: read %s: %w", name, file, err)
	}
	out.WriteString(knownhosts.Line([]string{name}, key) + "\n")

	if err := replaceFile(file, out.Bytes(), mode); err != nil {
		return fmt.Errorf("pin host key of %s: %w", name, err)
	}
	return nil
}

// replaceFile writes data to a temp file in file's directory, syncs it and renames it over file.
func replaceFile(file string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// unpinLine is line of a known_hosts file without host name (normalized); keep is false when
// nothing is left of it.
func unpinLine(line, name string) (string, bool) {
	trimmed := strings.TrimSpace(line)
	if trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "@") {
		return line, true
	}
	hosts, rest, ok := strings.Cut(trimmed, " ")
	if !ok {
		return line, true
	}
	var left []string
	for _, h := range strings.Split(hosts, ",") {
		if h == name || hashedMatch(h, name) {
			continue
		}
		left = append(left, h)
	}
	if len(left) == 0 {
		return "", false
	}
	if len(left) == len(strings.Split(hosts, ",")) {
		return line, true
	}
	return strings.Join(left, ",") + " " + rest, true
}

// hashedMatch reports whether pattern is a hashed known_hosts name (|1|salt|hash, OpenSSH's
// HashKnownHosts) of name.
func hashedMatch(pattern, name string) bool {
	if !strings.HasPrefix(pattern, "|1|") {
		return false
	}
	salt64, hash64, ok := strings.Cut(pattern[3:], "|")
	if !ok {
		return false
	}
	salt, err1 := base64.StdEncoding.DecodeString(salt64)
	hash, err2 := base64.StdEncoding.DecodeString(hash64)
	if err1 != nil || err2 != nil {
		return false
	}
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte(name))
	return hmac.Equal(mac.Sum(nil), hash)
}
