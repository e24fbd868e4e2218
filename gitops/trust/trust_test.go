package trust_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/gitops/trust"
)

// world is one repository with history: unsigned commits, commits signed by SSH keys of three types
// and by two OpenPGP keys, and commit objects made by hand (a signature moved onto another commit, a
// signature for another namespace, a garbled one).
type world struct {
	repo *repo
	dir  string // for allowed-signers files

	alice, bob, carol, mallory, frank string // public key lines (ed25519, rsa, ecdsa, ed25519, ed25519)
	daveKey, eveKey                   string // OpenPGP fingerprints
	daveArmored                       string

	initial, cAlice, cBob, cCarol, cMallory, cFrank, cDave, cEve, unsigned string
	moved, otherNamespace, garbled, huge                                   string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	home, fprs := gnupg(t, "Dave <dave@example.invalid>", "Eve <eve@example.invalid>")
	w := &world{repo: newRepo(t, home), dir: t.TempDir(), daveKey: fprs[0], eveKey: fprs[1]}
	keys := t.TempDir()
	aliceKey, alice := sshKey(t, keys, "alice", "ed25519")
	bobKey, bob := sshKey(t, keys, "bob", "rsa", "-b", "3072")
	carolKey, carol := sshKey(t, keys, "carol", "ecdsa", "-b", "256")
	malloryKey, mallory := sshKey(t, keys, "mallory", "ed25519")
	frankKey, frank := sshKey(t, keys, "frank", "ed25519")
	w.alice, w.bob, w.carol, w.mallory, w.frank = alice, bob, carol, mallory, frank
	w.daveArmored = exportKey(t, home, w.daveKey)

	r := w.repo
	w.initial = r.commit("initial")
	w.cAlice = r.sshSigned("alice's change", aliceKey)
	w.cBob = r.sshSigned("bob's change", bobKey)
	w.unsigned = r.commit("an unsigned change")
	w.cCarol = r.sshSigned("carol's change", carolKey)
	w.cMallory = r.sshSigned("mallory's change", malloryKey)
	w.cFrank = r.sshSigned("frank's change", frankKey)
	w.cDave = r.gpgSigned("dave's change", w.daveKey)
	w.cEve = r.gpgSigned("eve's change", w.eveKey)

	// Alice's signature copied onto the unsigned commit.
	aliceSig := gpgsig(t, r.git("cat-file", "commit", w.cAlice))
	w.moved = r.hashObject(withSig(r.git("cat-file", "commit", w.unsigned), aliceSig))
	// The initial commit signed by alice's key in the namespace "file" instead of "git".
	raw := r.git("cat-file", "commit", w.initial) + "\n"
	sig := run(t, keys, nil, []byte(raw), "ssh-keygen", "-Y", "sign", "-n", "file", "-f", aliceKey)
	w.otherNamespace = r.hashObject(withSig(raw, sig))
	w.garbled = r.hashObject(withSig(raw, "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH!!not base64\n-----END SSH SIGNATURE-----"))
	big := strings.TrimSuffix(strings.Repeat(strings.Repeat("A", 76)+"\n", 1400), "\n")
	w.huge = r.hashObject(withSig(raw, "-----BEGIN SSH SIGNATURE-----\n"+big+"\n-----END SSH SIGNATURE-----"))
	return w
}

// signers writes an allowed-signers file and loads it.
func (w *world) signers(t *testing.T, content string) (*trust.Signers, string) {
	t.Helper()
	path := writeFile(t, w.dir, strings.ReplaceAll(t.Name(), "/", "_"), content)
	s, err := trust.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

// gpgsig returns the gpgsig header's value of a raw commit, unfolded.
func gpgsig(t *testing.T, raw string) string {
	t.Helper()
	header, _, _ := strings.Cut(raw, "\n\n")
	var sig []string
	in := false
	for _, line := range strings.Split(header, "\n") {
		switch {
		case strings.HasPrefix(line, "gpgsig "):
			in = true
			sig = append(sig, strings.TrimPrefix(line, "gpgsig "))
		case in && strings.HasPrefix(line, " "):
			sig = append(sig, line[1:])
		default:
			in = false
		}
	}
	if len(sig) == 0 {
		t.Fatalf("no gpgsig in:\n%s", raw)
	}
	return strings.Join(sig, "\n")
}

// withSig adds a gpgsig header to a raw unsigned commit.
func withSig(raw, sig string) string {
	header, body, _ := strings.Cut(raw, "\n\n")
	return header + "\ngpgsig " + strings.ReplaceAll(strings.TrimSuffix(sig, "\n"), "\n", "\n ") + "\n\n" + body
}

// hashObject writes a raw commit object with git and returns its id.
func (r *repo) hashObject(raw string) string {
	r.t.Helper()
	return run(r.t, r.dir, r.env, []byte(raw), "git", "hash-object", "-t", "commit", "-w", "--stdin")
}

func TestVerify(t *testing.T) {
	w := newWorld(t)
	line := func(principals, options, key string) string {
		if options != "" {
			options += " "
		}
		return principals + " " + options + key + "\n"
	}
	tests := []struct {
		name    string
		signers string
		commit  string
		// want is the signer's name when accepted, else wantErr is part of the refusal.
		want, wantErr string
		// git says whether `git verify-commit` is the reference for the verdict (SSH signatures).
		git bool
	}{
		{name: "ed25519", signers: line("alice@example.invalid", "", w.alice), commit: w.cAlice, want: "alice@example.invalid", git: true},
		{name: "rsa", signers: line("bob@example.invalid", "", w.bob), commit: w.cBob, want: "bob@example.invalid", git: true},
		{name: "ecdsa among others", signers: "# the team\n\n" + line("alice@example.invalid", "", w.alice) +
			line(`"carol@example.invalid"`, `namespaces="git"`, w.carol), commit: w.cCarol, want: "carol@example.invalid", git: true},
		{name: "unknown key", signers: line("alice@example.invalid", "", w.alice) + line("bob@example.invalid", "", w.bob),
			commit: w.cMallory, wantErr: "is signed by an unknown SSH key SHA256:", git: true},
		{name: "namespaces file", signers: line("frank@example.invalid", `namespaces="file"`, w.frank), commit: w.cFrank,
			wantErr: `allowed for namespaces "file" only`, git: true},
		{name: "namespaces pattern", signers: line("frank@example.invalid", `namespaces="file,g?t"`, w.frank), commit: w.cFrank,
			want: "frank@example.invalid", git: true},
		{name: "namespaces negated", signers: line("frank@example.invalid", `namespaces="*,!git"`, w.frank), commit: w.cFrank,
			wantErr: `allowed for namespaces "*,!git" only`, git: true},
		{name: "second line allows", signers: line("frank@example.invalid", `namespaces="file"`, w.frank) +
			line("frank@example.invalid", "", w.frank), commit: w.cFrank, want: "frank@example.invalid", git: true},
		{name: "expired before the commit", signers: line("alice@example.invalid", `valid-before="20260101Z"`, w.alice), commit: w.cAlice,
			wantErr: "expired 2026-01-01 00:00Z", git: true},
		{name: "valid until after the commit", signers: line("alice@example.invalid", `valid-after="20250101",VALID-BEFORE="202606011201Z"`, w.alice),
			commit: w.cAlice, want: "alice@example.invalid", git: true},
		{name: "valid to the commit's second", signers: line("alice@example.invalid", `valid-before="20260601120000Z"`, w.alice),
			commit: w.cAlice, want: "alice@example.invalid", git: true},
		{name: "not yet valid", signers: line("alice@example.invalid", `valid-after="20260601120001Z"`, w.alice), commit: w.cAlice,
			wantErr: "not valid until 2026-06-01 12:00Z", git: true},
		{name: "valid from the commit's second", signers: line("alice@example.invalid", `valid-after="20260601120000Z"`, w.alice),
			commit: w.cAlice, want: "alice@example.invalid", git: true},
		{name: "unsigned", signers: line("alice@example.invalid", "", w.alice), commit: w.unsigned, wantErr: "is not signed", git: true},
		{name: "signature moved onto another commit", signers: line("alice@example.invalid", "", w.alice), commit: w.moved,
			wantErr: "has an SSH signature that does not verify", git: true},
		{name: "signature for namespace file", signers: line("alice@example.invalid", "", w.alice), commit: w.otherNamespace,
			wantErr: `has an SSH signature for namespace "file", want git`, git: true},
		{name: "garbled SSH signature", signers: line("alice@example.invalid", "", w.alice), commit: w.garbled,
			wantErr: "has a malformed SSH signature: invalid base64", git: true},
		{name: "huge signature", signers: line("alice@example.invalid", "", w.alice), commit: w.huge,
			wantErr: "has a signature of 107", git: true},
		{name: "gpg", signers: w.daveArmored, commit: w.cDave, want: "Dave <dave@example.invalid>"},
		{name: "gpg unknown key", signers: w.daveArmored, commit: w.cEve,
			wantErr: "is signed by GPG key 0x" + w.eveKey[len(w.eveKey)-16:] + ", which is not trusted"},
		{name: "gpg with SSH keys only", signers: line("alice@example.invalid", "", w.alice), commit: w.cDave,
			wantErr: "is signed by GPG key 0x" + w.daveKey[len(w.daveKey)-16:] + ", and no GPG key is trusted"},
		{name: "SSH with GPG keys only", signers: w.daveArmored, commit: w.cAlice, wantErr: "is signed by an unknown SSH key SHA256:"},
		{name: "both formats: SSH", signers: line("alice@example.invalid", "", w.alice) + "\n# release key\n" + w.daveArmored +
			line("bob@example.invalid", "", w.bob), commit: w.cBob, want: "bob@example.invalid", git: true},
		{name: "both formats: GPG", signers: line("alice@example.invalid", "", w.alice) + "\n# release key\n" + w.daveArmored +
			line("bob@example.invalid", "", w.bob), commit: w.cDave, want: "Dave <dave@example.invalid>"},
		{name: "both formats, CRLF", signers: strings.ReplaceAll(line("alice@example.invalid", `namespaces="git"`, w.alice)+w.daveArmored, "\n", "\r\n"),
			commit: w.cDave, want: "Dave <dave@example.invalid>"},
		{name: "both formats: unknown GPG key", signers: line("alice@example.invalid", "", w.alice) + w.daveArmored,
			commit: w.cEve, wantErr: ", which is not trusted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, path := w.signers(t, tt.signers)
			got, err := s.Verify(t.Context(), w.repo.dir, tt.commit)
			if tt.want != "" {
				if err != nil || got.Name != tt.want {
					t.Fatalf("Verify = %v, %v; want signer %s", got, err, tt.want)
				}
				if !strings.HasPrefix(got.Fingerprint, "SHA256:") && !strings.Contains(w.daveKey, got.Fingerprint) {
					t.Errorf("fingerprint %s is neither an SSH key's nor dave's %s", got.Fingerprint, w.daveKey)
				}
			} else {
				var te *trust.Error
				if !errors.As(err, &te) || !errors.Is(err, trust.ErrUntrusted) || te.Commit != tt.commit {
					t.Fatalf("Verify = %v, %v; want a *trust.Error for %s", got, err, tt.commit)
				}
				if !strings.HasPrefix(err.Error(), "commit "+tt.commit[:7]+" ") || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q, want \"commit %s …%s…\"", err, tt.commit[:7], tt.wantErr)
				}
				if len(err.Error()) > 140 {
					t.Errorf("error of %d characters, over a status's 140: %q", len(err.Error()), err)
				}
			}
			if tt.git {
				gitErr := w.repo.gitVerify(path, tt.commit)
				if (gitErr == nil) != (tt.want != "") {
					t.Errorf("git verify-commit disagrees: %v", gitErr)
				}
			}
		})
	}
}

func TestVerifyFingerprints(t *testing.T) {
	w := newWorld(t)
	s, _ := w.signers(t, "alice@example.invalid "+w.alice+"\n"+w.daveArmored)
	want := run(t, w.dir, nil, []byte(w.alice), "ssh-keygen", "-l", "-f", "-")
	got, err := s.Verify(t.Context(), w.repo.dir, w.cAlice)
	if err != nil {
		t.Fatal(err)
	}
	// ssh-keygen -l: "256 SHA256:… comment (ED25519)".
	if f := strings.Fields(want); len(f) < 2 || got.Fingerprint != f[1] {
		t.Errorf("fingerprint %s, ssh-keygen -l says %s", got.Fingerprint, want)
	}
	if got.String() != "alice@example.invalid ("+got.Fingerprint+")" {
		t.Errorf("String() = %q", got)
	}
	got, err = s.Verify(t.Context(), w.repo.dir, w.cDave)
	if err != nil || got.Fingerprint != w.daveKey {
		t.Errorf("Verify = %v, %v; want dave's key %s", got, err, w.daveKey)
	}
}

// TestVerifyWorkspace verifies commits in the workspaces checkout makes: a work tree whose .git holds
// only the commit, marked shallow.
func TestVerifyWorkspace(t *testing.T) {
	w := newWorld(t)
	s, _ := w.signers(t, "alice@example.invalid "+w.alice+"\n"+w.daveArmored)
	cache := &checkout.Cache{Dir: t.TempDir()}
	parent := t.TempDir()
	for _, c := range []struct {
		commit, want, wantErr string
	}{
		{commit: w.cAlice, want: "alice@example.invalid"},
		{commit: w.cDave, want: "Dave <dave@example.invalid>"},
		{commit: w.cMallory, wantErr: "is signed by an unknown SSH key"},
		{commit: w.unsigned, wantErr: "is not signed"},
	} {
		ws, err := cache.Checkout(t.Context(), checkout.Source{URL: w.repo.dir}, c.commit, parent)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(ws.Dir, ".git", "shallow")); err != nil {
			t.Errorf("workspace of %s is not shallow: %v", c.commit, err)
		}
		got, err := s.Verify(t.Context(), ws.Dir, ws.Commit)
		switch {
		case c.want != "" && (err != nil || got.Name != c.want):
			t.Errorf("%s: Verify = %v, %v; want %s", c.commit, got, err, c.want)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: Verify = %v, %v; want a refusal: %s", c.commit, got, err, c.wantErr)
		}
		if err := ws.Close(); err != nil {
			t.Error(err)
		}
	}
}

func TestVerifyBadInput(t *testing.T) {
	w := newWorld(t)
	s, _ := w.signers(t, "alice@example.invalid "+w.alice+"\n")
	for _, c := range []struct {
		name, dir, commit, wantErr string
	}{
		{name: "short id", dir: w.repo.dir, commit: w.cAlice[:12], wantErr: "not a full commit id"},
		{name: "not hex", dir: w.repo.dir, commit: strings.Repeat("g", 40), wantErr: "not a full commit id"},
		{name: "missing commit", dir: w.repo.dir, commit: strings.Repeat("0", 40), wantErr: "read commit"},
		{name: "not a repository", dir: t.TempDir(), commit: w.cAlice, wantErr: "open repository"},
	} {
		_, err := s.Verify(t.Context(), c.dir, c.commit)
		if err == nil || errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: Verify = %v, want an error (not a refusal) naming %q", c.name, err, c.wantErr)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	_, ed := sshKey(t, dir, "key", "ed25519")
	edBase64 := strings.Fields(ed)[1]
	const pgpGarbage = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
	tests := []struct {
		name, content, wantErr string
	}{
		{name: "empty", content: "", wantErr: "names no key"},
		{name: "comments only", content: "# nobody\n\n   \n", wantErr: "names no key"},
		{name: "garbage base64", content: "a@x ssh-ed25519 AAAA!!!!\n", wantErr: ":1: ssh-ed25519 key: invalid base64"},
		{name: "base64 of no key", content: "# c\n\na@x ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n", wantErr: ":3: ssh-ed25519 key:"},
		{name: "unknown key type", content: "a@x ssh-foo " + edBase64 + "\n", wantErr: `:1: unknown key type "ssh-foo"`},
		{name: "type mismatch", content: "a@x ssh-rsa " + edBase64 + "\n", wantErr: ":1: key type ssh-rsa, but the key is ssh-ed25519"},
		{name: "certificate type", content: "a@x ssh-ed25519-cert-v01@openssh.com " + edBase64 + "\n", wantErr: "is a certificate"},
		{name: "cert-authority", content: "a@x " + ed + "\n*@x cert-authority " + ed + "\n", wantErr: ":2: cert-authority: SSH certificates are not supported"},
		{name: "unquoted namespaces", content: "a@x namespaces=git " + ed + "\n", wantErr: ":1: option namespaces: value must be in double quotes"},
		{name: "empty namespaces", content: `a@x namespaces="" ` + ed + "\n", wantErr: "option namespaces: empty list"},
		{name: "bad timestamp", content: `a@x valid-before="2026" ` + ed + "\n", wantErr: ":1: option valid-before: timestamp \"2026\""},
		{name: "impossible date", content: `a@x valid-after="20261345" ` + ed + "\n", wantErr: "option valid-after: timestamp"},
		{name: "unknown option", content: `a@x no-touch-required,foo="x" ` + ed + "\n", wantErr: `unsupported option "no-touch-required"`},
		{name: "option twice", content: `a@x namespaces="git",namespaces="file" ` + ed + "\n", wantErr: `option "namespaces" given twice`},
		{name: "no key", content: "a@x\n", wantErr: ":1: no key after the principals"},
		{name: "options, no key", content: `a@x namespaces="git"` + "\n", wantErr: ":1: no key after the options"},
		{name: "type, no key", content: "a@x ssh-ed25519\n", wantErr: ":1: no base64 key after ssh-ed25519"},
		{name: "open quote", content: `"a@x ` + ed + "\n", wantErr: "principals: missing closing quote"},
		{name: "control character", content: "a\x1b[2J@x " + ed + "\n", wantErr: "control character"},
		{name: "unterminated PGP block", content: "a@x " + ed + "\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n", wantErr: ":2: OpenPGP key block has no -----END"},
		{name: "private PGP block", content: "-----BEGIN PGP PRIVATE KEY BLOCK-----\nsecret\n-----END PGP PRIVATE KEY BLOCK-----\n", wantErr: ":1: an OpenPGP private key block"},
		{name: "garbage PGP block", content: "a@x " + ed + "\n" + pgpGarbage, wantErr: ":2: OpenPGP key block:"},
		{name: "huge base64", content: "a@x ssh-ed25519 " + strings.Repeat("QUFB", 200_000) + "\n", wantErr: ":1: ssh-ed25519 key:"},
		{name: "over the bound", content: strings.Repeat("#", trust.MaxFileBytes+1), wantErr: "is larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, t.TempDir(), "allowed_signers", tt.content)
			s, err := trust.Load(path)
			if err == nil {
				t.Fatalf("Load = %v, want an error: %s", s, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "trusted signers: "+path) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want %q naming the file", err, tt.wantErr)
			}
			if len(err.Error()) > len(path)+200 {
				t.Errorf("error of %d bytes: the input is echoed", len(err.Error()))
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the private key block's content", err)
			}
		})
	}
	if _, err := trust.Load(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file = %v, want fs.ErrNotExist", err)
	}
}

// TestLoadPrivateGPGKey: an exported secret key is refused, its content never shown.
func TestLoadPrivateGPGKey(t *testing.T) {
	home, fprs := gnupg(t, "Secret <secret@example.invalid>")
	armored := run(t, home, []string{"GNUPGHOME=" + home}, nil, "gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
		"--armor", "--export-secret-keys", fprs[0])
	path := writeFile(t, t.TempDir(), "signers", armored+"\n")
	_, err := trust.Load(path)
	if err == nil || !strings.Contains(err.Error(), ":1: an OpenPGP private key block") {
		t.Fatalf("Load = %v, want a refusal of the private key block", err)
	}
}
