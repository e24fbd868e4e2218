package trust_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// commitDate is every test commit's author and committer date: allowed-signers validity is checked
// against it, so the tests do not depend on the clock.
const commitDate = "2026-06-01T12:00:00Z"

// run runs a program in dir with extra environment and returns its standard output, trimmed.
func run(t *testing.T, dir string, env []string, stdin []byte, name string, args ...string) string {
	t.Helper()
	out, err := runErr(dir, env, stdin, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func runErr(dir string, env []string, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), &cmdError{err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return strings.TrimSpace(stdout.String()), nil
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + e.stderr }

// repo is a git repository the tests commit to with real git, signing with real ssh-keygen and gpg.
type repo struct {
	t   *testing.T
	dir string
	env []string
	n   int
}

func newRepo(t *testing.T, gnupgHome string) *repo {
	t.Helper()
	r := &repo{t: t, dir: t.TempDir(), env: []string{
		"GIT_AUTHOR_DATE=" + commitDate, "GIT_COMMITTER_DATE=" + commitDate,
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GNUPGHOME=" + gnupgHome,
	}}
	r.git("init", "-q", "-b", "main")
	return r
}

func (r *repo) git(args ...string) string {
	r.t.Helper()
	base := []string{"-c", "user.name=Test", "-c", "user.email=test@example.invalid"}
	return run(r.t, r.dir, r.env, nil, "git", append(base, args...)...)
}

// commit adds a file and commits it with the extra git arguments (signing options), returning the
// commit id.
func (r *repo) commit(msg string, signArgs ...string) string {
	r.t.Helper()
	r.n++
	name := filepath.Join(r.dir, "file")
	if err := os.WriteFile(name, []byte(strings.Repeat("x", r.n)+"\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
	r.git("add", "file")
	args := append(signArgs, "commit", "-q", "-m", msg)
	if len(signArgs) == 0 {
		args = append(args, "--no-gpg-sign")
	} else {
		args = append(args, "-S")
	}
	r.git(args...)
	return r.git("rev-parse", "HEAD")
}

// sshSigned commits, signed with the SSH private key at key.
func (r *repo) sshSigned(msg, key string) string {
	r.t.Helper()
	return r.commit(msg, "-c", "gpg.format=ssh", "-c", "user.signingkey="+key)
}

// gpgSigned commits, signed by the OpenPGP key with fingerprint fpr.
func (r *repo) gpgSigned(msg, fpr string) string {
	r.t.Helper()
	return r.commit(msg, "-c", "gpg.format=openpgp", "-c", "gpg.program=gpg", "-c", "user.signingkey="+fpr)
}

// gitVerify runs git verify-commit with allowedSigners as gpg.ssh.allowedSignersFile: the reference
// verdict for SSH signatures.
func (r *repo) gitVerify(allowedSigners, commit string) error {
	_, err := runErr(r.dir, r.env, nil, "git", "-c", "gpg.ssh.allowedSignersFile="+allowedSigners, "verify-commit", commit)
	return err
}

// sshKey makes an SSH key pair with ssh-keygen and returns the private key's path and the public
// key line ("type base64 comment").
func sshKey(t *testing.T, dir, name, typ string, bits ...string) (string, string) {
	t.Helper()
	path := filepath.Join(dir, name)
	args := append([]string{"-q", "-t", typ, "-N", "", "-C", name + "@example.invalid", "-f", path}, bits...)
	run(t, dir, nil, nil, "ssh-keygen", args...)
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return path, strings.TrimSpace(string(pub))
}

// gnupg makes a GnuPG home with no-passphrase ed25519 signing keys, one per user id, and returns the
// home and the keys' fingerprints. The daemon gpg starts for it is stopped when the test ends.
func gnupg(t *testing.T, uids ...string) (string, []string) {
	t.Helper()
	// gpg's socket path must be short: make the home directly under the temp directory.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"GNUPGHOME=" + home}
	t.Cleanup(func() {
		runErr(home, env, nil, "gpgconf", "--kill", "all")
		os.RemoveAll(home)
	})
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	var fprs []string
	for _, uid := range uids {
		run(t, home, env, nil, "gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
		out := run(t, home, env, nil, "gpg", "--batch", "--with-colons", "--fingerprint", uid)
		fpr := ""
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Split(line, ":"); f[0] == "fpr" {
				fpr = f[9]
				break
			}
		}
		if fpr == "" {
			t.Fatalf("no fingerprint for %s in:\n%s", uid, out)
		}
		fprs = append(fprs, fpr)
	}
	return home, fprs
}

// exportKey returns the armored public key with fingerprint fpr.
func exportKey(t *testing.T, home, fpr string) string {
	t.Helper()
	return run(t, home, []string{"GNUPGHOME=" + home}, nil, "gpg", "--batch", "--armor", "--export", fpr) + "\n"
}

// writeFile writes content to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
