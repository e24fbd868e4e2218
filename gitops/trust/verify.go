package trust

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// maxSignatureBytes bounds the gpgsig header read (an RSA-16384 signature is under 4 KiB).
const maxSignatureBytes = 64 << 10

// ErrUntrusted is wrapped by every *Error: the commit's signature is missing, malformed, does not
// verify, or is made by a key the Signers do not trust.
var ErrUntrusted = errors.New("untrusted commit signature")

// Error refuses a commit. Its message, "commit abc1234 " followed by Reason, fits a forge status.
type Error struct {
	Commit string // full commit id
	// Reason completes the sentence "commit abc1234 …": "is not signed", "is signed by an unknown SSH
	// key SHA256:…", "has an SSH signature that does not verify", …
	Reason string
}

func (e *Error) Error() string {
	c := e.Commit
	if len(c) > 7 {
		c = c[:7]
	}
	return "commit " + c + " " + e.Reason
}

// Unwrap returns ErrUntrusted.
func (e *Error) Unwrap() error { return ErrUntrusted }

// Signer is the trusted key that signed a commit.
type Signer struct {
	// Name is the allowed-signers principals field, or the OpenPGP key's primary user id.
	Name string
	// Fingerprint is "SHA256:…" for an SSH key, the OpenPGP primary key fingerprint in hex otherwise.
	Fingerprint string
}

func (s Signer) String() string { return s.Name + " (" + s.Fingerprint + ")" }

// Verify checks the signature of commit (a full id) in the git repository at repoDir: a work tree
// or a bare repository, shallow or not (a checkout.Workspace is one: it holds only that commit).
// Only the commit object is read. A refusal is an *Error (errors.Is(err, ErrUntrusted)); any other
// error means the commit could not be read.
func (s *Signers) Verify(ctx context.Context, repoDir, commit string) (Signer, error) {
	if err := ctx.Err(); err != nil {
		return Signer{}, err
	}
	if len(commit) != 40 || strings.Trim(strings.ToLower(commit), "0123456789abcdef") != "" {
		return Signer{}, fmt.Errorf("trust: commit %s: not a full commit id", quote(commit, 64))
	}
	h := plumbing.NewHash(commit)
	repo, err := git.PlainOpenWithOptions(repoDir, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
	if err != nil {
		return Signer{}, fmt.Errorf("trust: open repository %s: %w", repoDir, err)
	}
	c, err := object.GetCommit(repo.Storer, h)
	if err != nil {
		return Signer{}, fmt.Errorf("trust: read commit %s in %s: %w", commit, repoDir, err)
	}
	return s.VerifyCommit(c)
}

// VerifyCommit checks the signature of a commit go-git decoded from its storage (so that its signed
// bytes are exactly what was signed). SSH signatures are checked against the time of the commit's
// committer line, as `git verify-commit` does (it passes ssh-keygen -Overify-time); OpenPGP key and
// signature expiry against the current time, as gpg does.
func (s *Signers) VerifyCommit(c *object.Commit) (Signer, error) {
	refuse := func(format string, args ...any) (Signer, error) {
		return Signer{}, &Error{Commit: c.Hash.String(), Reason: fmt.Sprintf(format, args...)}
	}
	sig := c.PGPSignature
	switch {
	case sig == "":
		return refuse("is not signed")
	case len(sig) > maxSignatureBytes:
		return refuse("has a signature of %d bytes, over %d", len(sig), maxSignatureBytes)
	case strings.HasPrefix(sig, sshSigBegin):
		return s.verifySSH(c, refuse)
	case strings.HasPrefix(sig, "-----BEGIN PGP SIGNATURE-----"):
		return s.verifyPGP(c, refuse)
	default:
		first, _, _ := strings.Cut(sig, "\n")
		return refuse("has a signature of an unsupported kind: %s", quote(first, 40))
	}
}

func (s *Signers) verifyPGP(c *object.Commit, refuse func(string, ...any) (Signer, error)) (Signer, error) {
	if len(s.pgp) == 0 {
		return refuse("is signed by GPG key %s, and no GPG key is trusted", issuer(c.PGPSignature))
	}
	e, err := c.Verify(s.pgpArmored)
	switch {
	case err == nil:
		return Signer{Name: pgpName(e), Fingerprint: pgpFingerprint(e)}, nil
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return refuse("is signed by GPG key %s, which is not trusted", issuer(c.PGPSignature))
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return refuse("is signed by GPG key %s, which has expired", issuer(c.PGPSignature))
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return refuse("is signed by GPG key %s, which is revoked", issuer(c.PGPSignature))
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return refuse("has a GPG signature that has expired")
	case errors.Is(err, object.ErrMultipleSignatures):
		return refuse("has more than one signature")
	default:
		var se pgperrors.SignatureError
		var ue pgperrors.UnsupportedError
		var we pgperrors.WeakAlgorithmError
		switch {
		case errors.As(err, &we):
			return refuse("has a GPG signature made with a weak algorithm")
		case errors.As(err, &se):
			return refuse("has a GPG signature that does not verify")
		case errors.As(err, &ue):
			return refuse("has a GPG signature of an unsupported kind")
		}
		return refuse("has a GPG signature that cannot be read")
	}
}

// issuer names the key a PGP signature says made it: "0x" and the key id, or the fingerprint.
func issuer(armored string) string {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return "(unreadable)"
	}
	p, err := packet.Read(block.Body)
	if err != nil {
		return "(unreadable)"
	}
	sig, ok := p.(*packet.Signature)
	switch {
	case !ok:
		return "(unreadable)"
	case sig.IssuerKeyId != nil:
		return fmt.Sprintf("0x%016X", *sig.IssuerKeyId)
	case len(sig.IssuerFingerprint) > 0:
		return strings.ToUpper(hex.EncodeToString(sig.IssuerFingerprint))
	}
	return "(no issuer)"
}

func pgpFingerprint(e *openpgp.Entity) string {
	if e == nil || e.PrimaryKey == nil {
		return ""
	}
	return strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}

func pgpName(e *openpgp.Entity) string {
	if id := e.PrimaryIdentity(); id != nil {
		return id.Name
	}
	return fmt.Sprintf("0x%016X", e.PrimaryKey.KeyId)
}
