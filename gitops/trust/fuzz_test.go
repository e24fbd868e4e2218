package trust

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"golang.org/x/crypto/ssh"
)

// seedKey is a fixed ed25519 public key line ("ssh-ed25519 AAAA…").
func seedKey(t testing.TB) string {
	pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)).Public()
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func seedPGP(t testing.TB) string {
	// An EdDSA key: its self-signatures verify in microseconds, so the fuzzer's minimizing stays quick.
	e, err := openpgp.NewEntity("Seed", "", "seed@example.invalid", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return buf.String() + "\n"
}

// FuzzLoad: any file content is either refused with an error naming the file, short, or gives at
// least one key; nothing panics.
func FuzzLoad(f *testing.F) {
	key := seedKey(f)
	for _, s := range []string{
		"a@example.invalid " + key + " comment\n",
		`"a b@x",c@x namespaces="git,file",valid-after="20260101Z",valid-before="202701011200" ` + key + "\n",
		"# c\n\n*@x cert-authority " + key + "\n",
		`a@x namespaces="g*t,!file" ` + key + "\r\n",
		"a@x ssh-ed25519 AAAA\n",
		seedPGP(f),
		"a@x " + key + "\n" + seedPGP(f),
		"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parse("f", data)
		if err != nil {
			if s != nil {
				t.Fatal("signers and an error")
			}
			if !strings.HasPrefix(err.Error(), "trusted signers: f") || len(err.Error()) > 400 {
				t.Fatalf("error %q: not naming the file, or too long", err)
			}
			return
		}
		if len(s.ssh)+len(s.pgp) == 0 {
			t.Fatal("no error and no key")
		}
		for _, a := range s.ssh {
			if a.principals == "" || a.key == nil || a.line < 1 {
				t.Fatalf("incomplete signer %+v", a)
			}
		}
	})
}

// FuzzSSHSig: the SSHSIG parser refuses any malformed input without panicking, and what it accepts
// does not verify over an arbitrary message.
func FuzzSSHSig(f *testing.F) {
	f.Add(sshSigBegin + "\nU1NIU0lH\n" + sshSigEnd)
	f.Add(sshSigBegin + "\nU1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAg\n" + sshSigEnd)
	f.Fuzz(func(t *testing.T, armored string) {
		sig, err := parseSSHSig(armored)
		if err != nil {
			return
		}
		if sig.verify([]byte("tree 0\n")) == nil {
			t.Fatal("a fuzzed signature verifies")
		}
	})
}
