package trust

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"golang.org/x/crypto/ssh"
)

// The SSHSIG format, from OpenSSH's PROTOCOL.sshsig.
const (
	sshSigBegin   = "-----BEGIN SSH SIGNATURE-----"
	sshSigEnd     = "-----END SSH SIGNATURE-----"
	sshSigMagic   = "SSHSIG"
	sshSigVersion = 1
	// gitNamespace is the namespace git signs commits in (ssh-keygen -Y sign -n git).
	gitNamespace = "git"
	// maxPayloadBytes bounds the commit object hashed for an SSH signature.
	maxPayloadBytes = 16 << 20
)

// sshSig is a parsed SSHSIG blob.
type sshSig struct {
	key       ssh.PublicKey
	namespace string
	reserved  string
	hashAlg   string
	sig       ssh.Signature
}

// parseSSHSig decodes an armored SSHSIG signature. It checks the structure only.
func parseSSHSig(armored string) (*sshSig, error) {
	lines := strings.Split(strings.TrimSpace(armored), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	if len(lines) < 3 || lines[0] != sshSigBegin || lines[len(lines)-1] != sshSigEnd {
		return nil, errors.New("armor is malformed")
	}
	blob, err := base64.StdEncoding.DecodeString(strings.Join(lines[1:len(lines)-1], ""))
	if err != nil {
		return nil, errors.New("invalid base64")
	}
	if !bytes.HasPrefix(blob, []byte(sshSigMagic)) {
		return nil, errors.New("no SSHSIG magic")
	}
	var w struct {
		Version   uint32
		PublicKey []byte
		Namespace string
		Reserved  string
		HashAlg   string
		Signature []byte
	}
	if err := ssh.Unmarshal(blob[len(sshSigMagic):], &w); err != nil {
		return nil, errors.New("truncated or trailing data")
	}
	if w.Version != sshSigVersion {
		return nil, fmt.Errorf("version %d, want %d", w.Version, sshSigVersion)
	}
	key, err := ssh.ParsePublicKey(w.PublicKey)
	if err != nil {
		return nil, errors.New("unreadable public key")
	}
	s := &sshSig{key: key, namespace: w.Namespace, reserved: w.Reserved, hashAlg: w.HashAlg}
	if err := ssh.Unmarshal(w.Signature, &s.sig); err != nil {
		return nil, errors.New("unreadable signature")
	}
	return s, nil
}

// signedData is what the key signed for message: the SSHSIG preamble, namespace, reserved, hash
// algorithm and the message's hash.
func (s *sshSig) signedData(message []byte) ([]byte, error) {
	var h []byte
	switch s.hashAlg {
	case "sha256":
		sum := sha256.Sum256(message)
		h = sum[:]
	case "sha512":
		sum := sha512.Sum512(message)
		h = sum[:]
	default:
		return nil, fmt.Errorf("hash algorithm %s", quote(s.hashAlg, 16))
	}
	return append([]byte(sshSigMagic), ssh.Marshal(struct {
		Namespace string
		Reserved  string
		HashAlg   string
		Hash      []byte
	}{s.namespace, s.reserved, s.hashAlg, h})...), nil
}

// verify checks the signature over message cryptographically (not whether the key is trusted).
func (s *sshSig) verify(message []byte) error {
	data, err := s.signedData(message)
	if err != nil {
		return err
	}
	switch s.key.Type() {
	case ssh.KeyAlgoRSA:
		// OpenSSH refuses SHA-1 (ssh-rsa) signatures in SSHSIG.
		if s.sig.Format != ssh.KeyAlgoRSASHA256 && s.sig.Format != ssh.KeyAlgoRSASHA512 {
			return fmt.Errorf("RSA signature algorithm %s", quote(s.sig.Format, 32))
		}
	case ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
	default:
		if len(s.sig.Rest) > 0 {
			return errors.New("trailing data after the signature")
		}
	}
	return s.key.Verify(data, &s.sig)
}

func (s *Signers) verifySSH(c *object.Commit, refuse func(string, ...any) (Signer, error)) (Signer, error) {
	sig, err := parseSSHSig(c.PGPSignature)
	if err != nil {
		return refuse("has a malformed SSH signature: %v", err)
	}
	if _, ok := sig.key.(*ssh.Certificate); ok {
		return refuse("is signed with an SSH certificate; certificates are not supported")
	}
	fp := ssh.FingerprintSHA256(sig.key)
	if sig.namespace != gitNamespace {
		return refuse("has an SSH signature for namespace %s, want git", quote(sig.namespace, 24))
	}
	message, err := payload(c)
	if err != nil {
		return refuse("cannot be read for its signature: %v", err)
	}
	if err := sig.verify(message); err != nil {
		return refuse("has an SSH signature that does not verify (key %s)", fp)
	}
	keyBytes := sig.key.Marshal()
	when := c.Committer.When
	var refusal string
	for _, a := range s.ssh {
		if !bytes.Equal(a.key.Marshal(), keyBytes) {
			continue
		}
		why := a.refuses(when)
		if why == "" {
			return Signer{Name: a.principals, Fingerprint: fp}, nil
		}
		if refusal == "" {
			refusal = why
		}
	}
	if refusal != "" {
		return refuse("is signed by SSH key %s, %s", fp, refusal)
	}
	return refuse("is signed by an unknown SSH key %s", fp)
}

// refuses says why the line does not allow a git signature made at when, "" when it does (the checks
// of ssh-keygen -Y verify -n git -Overify-time=when).
func (a sshSigner) refuses(when time.Time) string {
	const stamp = "2006-01-02 15:04Z"
	switch {
	case a.namespaces != "" && !matchPatternList(gitNamespace, a.namespaces):
		return fmt.Sprintf("allowed for namespaces %s only", quote(a.namespaces, 24))
	case !a.validAfter.IsZero() && when.Before(a.validAfter):
		return "not valid until " + a.validAfter.UTC().Format(stamp)
	case !a.validBefore.IsZero() && when.After(a.validBefore):
		return "expired " + a.validBefore.UTC().Format(stamp)
	}
	return ""
}

// payload is the commit object without its signature headers: what git signed.
func payload(c *object.Commit) ([]byte, error) {
	o := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(o); err != nil {
		return nil, err
	}
	if o.Size() > maxPayloadBytes {
		return nil, fmt.Errorf("commit object of %d bytes, over %d", o.Size(), maxPayloadBytes)
	}
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
