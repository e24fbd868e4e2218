package trust

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"golang.org/x/crypto/ssh"
)

// MaxFileBytes bounds a trusted-signers file.
const MaxFileBytes = 1 << 20

const (
	pgpPublicBegin  = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
	pgpPublicEnd    = "-----END PGP PUBLIC KEY BLOCK-----"
	pgpPrivateBegin = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
)

// Signers is the set of keys a trusted-signers file names. It is read-only after Load and safe for
// concurrent use.
type Signers struct {
	path string
	ssh  []sshSigner // in file order
	pgp  openpgp.EntityList
	// pgpArmored is every OpenPGP key of the file in one armored block, what Commit.Verify takes.
	pgpArmored string
}

// sshSigner is one allowed-signers line.
type sshSigner struct {
	principals string
	key        ssh.PublicKey
	// namespaces is the namespaces= pattern-list, "" when the line does not restrict them.
	namespaces  string
	validAfter  time.Time // zero: no bound
	validBefore time.Time // zero: no bound
	line        int
}

// String says how many keys of each kind the file holds, for logs.
func (s *Signers) String() string {
	return fmt.Sprintf("%d SSH and %d OpenPGP trusted keys from %s", len(s.ssh), len(s.pgp), s.path)
}

// Load reads the trusted-signers file at path (at most MaxFileBytes). The file holds SSH
// allowed-signers lines ("principals [options] keytype base64-key [comment]", see ssh-keygen(1),
// ALLOWED SIGNERS; options namespaces="…", valid-after="…", valid-before="…"; '#' comments and blank
// lines) and ASCII-armored OpenPGP public key blocks, in any order. A line it cannot read, an
// unsupported option (cert-authority: certificates are not supported), a private key block, or a
// file with no key at all is an error naming path:line.
func Load(path string) (*Signers, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trusted signers: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("trusted signers: read %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("trusted signers: %s is larger than %d bytes", path, MaxFileBytes)
	}
	return parse(path, data)
}

// parse reads a trusted-signers file's content as Load does; name is used in errors.
func parse(name string, data []byte) (*Signers, error) {
	s := &Signers{path: name}
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		n := i + 1
		line := strings.TrimSpace(strings.TrimSuffix(lines[i], "\r"))
		switch {
		case line == "" || line[0] == '#':
			continue
		case strings.HasPrefix(line, pgpPrivateBegin):
			return nil, fmt.Errorf("trusted signers: %s:%d: an OpenPGP private key block; the file must hold public keys only", name, n)
		case strings.HasPrefix(line, "-----BEGIN PGP"):
			if line != pgpPublicBegin {
				return nil, fmt.Errorf("trusted signers: %s:%d: %s, want %s", name, n, quote(line, 48), pgpPublicBegin)
			}
			end := -1
			for j := i + 1; j < len(lines); j++ {
				if strings.TrimSpace(strings.TrimSuffix(lines[j], "\r")) == pgpPublicEnd {
					end = j
					break
				}
			}
			if end < 0 {
				return nil, fmt.Errorf("trusted signers: %s:%d: OpenPGP key block has no %s line", name, n, pgpPublicEnd)
			}
			keys, err := readPGPBlock(strings.Join(lines[i:end+1], "\n") + "\n")
			if err != nil {
				return nil, fmt.Errorf("trusted signers: %s:%d: OpenPGP key block: %w", name, n, err)
			}
			s.pgp = append(s.pgp, keys...)
			i = end
		default:
			sig, err := parseAllowedSigner(line)
			if err != nil {
				return nil, fmt.Errorf("trusted signers: %s:%d: %w", name, n, err)
			}
			sig.line = n
			s.ssh = append(s.ssh, sig)
		}
	}
	if len(s.ssh) == 0 && len(s.pgp) == 0 {
		return nil, fmt.Errorf("trusted signers: %s names no key (want allowed-signers lines or OpenPGP public key blocks)", name)
	}
	if len(s.pgp) > 0 {
		var buf bytes.Buffer
		w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
		if err != nil {
			return nil, fmt.Errorf("trusted signers: %s: %w", name, err)
		}
		for _, e := range s.pgp {
			if err := e.Serialize(w); err != nil {
				return nil, fmt.Errorf("trusted signers: %s: OpenPGP key %s: %w", name, pgpFingerprint(e), err)
			}
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("trusted signers: %s: %w", name, err)
		}
		s.pgpArmored = buf.String()
	}
	return s, nil
}

// readPGPBlock reads the public keys of one armored block.
func readPGPBlock(block string) (openpgp.EntityList, error) {
	keys, err := openpgp.ReadArmoredKeyRing(strings.NewReader(block))
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no key in the block")
	}
	for _, e := range keys {
		if e.PrivateKey != nil {
			return nil, errors.New("holds a private key; the file must hold public keys only")
		}
	}
	return keys, nil
}

// knownKeyTypes are the key types an allowed-signers line may name.
var knownKeyTypes = map[string]bool{
	ssh.KeyAlgoED25519: true, ssh.KeyAlgoRSA: true, ssh.KeyAlgoECDSA256: true, ssh.KeyAlgoECDSA384: true,
	ssh.KeyAlgoECDSA521: true, ssh.KeyAlgoSKED25519: true, ssh.KeyAlgoSKECDSA256: true, ssh.InsecureKeyAlgoDSA: true,
}

// parseAllowedSigner reads one allowed-signers line, as OpenSSH's sshsig.c does: principals (quoted
// or not), then options unless the next field is a key type, then key type, base64 key and an
// optional comment.
func parseAllowedSigner(line string) (sshSigner, error) {
	var sig sshSigner
	principals, rest, err := principalsField(line)
	if err != nil {
		return sig, err
	}
	for _, r := range principals {
		if unicode.IsControl(r) {
			return sig, errors.New("principals hold a control character")
		}
	}
	sig.principals = principals
	field, rest := nextField(rest)
	if field == "" {
		return sig, errors.New("no key after the principals")
	}
	if !knownKeyTypes[field] {
		if strings.HasSuffix(field, "-cert-v01@openssh.com") {
			return sig, fmt.Errorf("key type %s is a certificate; name the plain key", quote(field, 64))
		}
		if !looksLikeOptions(field) {
			return sig, fmt.Errorf("unknown key type %s", quote(field, 40))
		}
		if err := sig.parseOptions(field); err != nil {
			return sig, err
		}
		field, rest = nextField(rest)
		if field == "" {
			return sig, errors.New("no key after the options")
		}
		if !knownKeyTypes[field] {
			return sig, fmt.Errorf("unknown key type %s", quote(field, 40))
		}
	}
	keyType := field
	field, _ = nextField(rest)
	if field == "" {
		return sig, fmt.Errorf("no base64 key after %s", keyType)
	}
	blob, err := base64.StdEncoding.DecodeString(field)
	if err != nil {
		return sig, fmt.Errorf("%s key: invalid base64", keyType)
	}
	key, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return sig, fmt.Errorf("%s key: %w", keyType, err)
	}
	if key.Type() != keyType {
		return sig, fmt.Errorf("key type %s, but the key is %s", keyType, key.Type())
	}
	sig.key = key
	return sig, nil
}

// looksLikeOptions tells an options field from a misspelt key type: it has an option=value or is
// the one option without a value.
func looksLikeOptions(field string) bool {
	return strings.Contains(field, "=") || strings.EqualFold(field, "cert-authority") || strings.Contains(field, ",")
}

// principalsField splits off the first field: up to the closing quote when it starts with one, else
// up to white space.
func principalsField(line string) (principals, rest string, err error) {
	if strings.HasPrefix(line, `"`) {
		end := strings.IndexByte(line[1:], '"')
		if end < 0 {
			return "", "", errors.New("principals: missing closing quote")
		}
		principals, rest = line[1:1+end], line[2+end:]
		if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
			return "", "", errors.New("principals: no space after the closing quote")
		}
	} else {
		principals, rest = nextField(line)
	}
	if principals == "" {
		return "", "", errors.New("empty principals")
	}
	return principals, rest, nil
}

// nextField splits off the next space-separated field; in it, spaces inside double quotes do not end
// the field (options such as namespaces="a b" are one field).
func nextField(s string) (field, rest string) {
	s = strings.TrimLeft(s, " \t")
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			inQuote = !inQuote
		case (c == ' ' || c == '\t') && !inQuote:
			return s[:i], s[i:]
		}
	}
	return s, ""
}

// parseOptions reads the comma-separated options field. Option names are case-insensitive; values
// are double-quoted, as OpenSSH requires.
func (sig *sshSigner) parseOptions(field string) error {
	seen := map[string]bool{}
	for field != "" {
		var opt string
		opt, field = splitOption(field)
		name, value, hasValue := strings.Cut(opt, "=")
		name = strings.ToLower(name)
		if seen[name] {
			return fmt.Errorf("option %s given twice", quote(name, 32))
		}
		seen[name] = true
		switch name {
		case "cert-authority":
			return errors.New("cert-authority: SSH certificates are not supported; name the signers' keys")
		case "namespaces", "valid-after", "valid-before":
			if !hasValue {
				return fmt.Errorf("option %s needs a value", name)
			}
			v, err := dequote(value)
			if err != nil {
				return fmt.Errorf("option %s: %w", name, err)
			}
			switch name {
			case "namespaces":
				if v == "" {
					return errors.New("option namespaces: empty list")
				}
				sig.namespaces = v
			case "valid-after":
				if sig.validAfter, err = parseTimestamp(v); err != nil {
					return fmt.Errorf("option valid-after: %w", err)
				}
			case "valid-before":
				if sig.validBefore, err = parseTimestamp(v); err != nil {
					return fmt.Errorf("option valid-before: %w", err)
				}
			}
		default:
			return fmt.Errorf("unsupported option %s", quote(name, 32))
		}
	}
	return nil
}

// splitOption splits off the first option at a comma outside quotes.
func splitOption(s string) (opt, rest string) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				return s[:i], s[i+1:]
			}
		}
	}
	return s, ""
}

func dequote(v string) (string, error) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", errors.New("value must be in double quotes")
	}
	v = v[1 : len(v)-1]
	if strings.ContainsRune(v, '"') {
		return "", errors.New("stray double quote in the value")
	}
	return v, nil
}

// parseTimestamp reads YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]: in the local time zone unless suffixed
// with Z (UTC), as ssh-keygen(1) says.
func parseTimestamp(v string) (time.Time, error) {
	loc := time.Local
	digits := v
	if strings.HasSuffix(v, "Z") || strings.HasSuffix(v, "z") {
		loc, digits = time.UTC, v[:len(v)-1]
	}
	layouts := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(digits)]
	if !ok || strings.Trim(digits, "0123456789") != "" {
		return time.Time{}, fmt.Errorf("timestamp %s is not YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]", quote(v, 24))
	}
	t, err := time.ParseInLocation(layout, digits, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %s: %w", quote(v, 24), err)
	}
	return t, nil
}

// matchPatternList reports whether s matches the comma-separated pattern-list (ssh_config(5),
// PATTERNS: '*' and '?' wildcards, '!' negates): no negated pattern matches and a plain one does.
func matchPatternList(s, list string) bool {
	positive := false
	for _, p := range strings.Split(list, ",") {
		negated := strings.HasPrefix(p, "!")
		if negated {
			p = p[1:]
		}
		if matchPattern(s, p) {
			if negated {
				return false
			}
			positive = true
		}
	}
	return positive
}

// matchPattern matches s against one pattern with '*' and '?', without recursion: it backtracks only
// to the last star, so it takes at most len(s)*len(p) steps.
func matchPattern(s, p string) bool {
	si, pi, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			si++
			pi++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// quote quotes s for an error, at most max bytes of it.
func quote(s string, max int) string {
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
