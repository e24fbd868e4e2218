package remote_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/remote"
)

// localRunner runs commands on this machine, as sshd would hand them to a shell (argv, stdin): the
// install script runs on a real sh with the real chown, mktemp and mv.
type localRunner struct{}

func (localRunner) Run(ctx context.Context, cmd remote.Cmd) error {
	c := exec.CommandContext(ctx, cmd.Argv[0], cmd.Argv[1:]...)
	c.Stdin, c.Stdout = cmd.Stdin, cmd.Stdout
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return &remote.ExitError{Code: c.ProcessState.ExitCode(), Stderr: stderr.String()}
	}
	return nil
}

func writeSecrets(t *testing.T, dir, node string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, node), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, node, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSecretsDirInstall(t *testing.T) {
	t.Parallel()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	local, node := t.TempDir(), filepath.Join(t.TempDir(), "var", "lib", "nats", "secrets")
	writeSecrets(t, local, "nats-1", map[string]string{"ca.pem": "CA-1", "node.pem": "CERT-1", "node-key.pem": "KEY-1"})
	s := remote.SecretsDir{Dir: local, Files: []string{"ca.pem", "node.pem", "node-key.pem"}, RemoteDir: node, Owner: me.Username}
	if err := s.Check("nats-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Install(t.Context(), "nats-1", localRunner{}); err != nil {
		t.Fatal(err)
	}
	// Rotation: new contents replace the old files.
	writeSecrets(t, local, "nats-1", map[string]string{"node.pem": "CERT-2", "node-key.pem": "KEY-2"})
	if err := s.Install(t.Context(), "nats-1", localRunner{}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(node)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("secrets directory %v, %v: want mode 0700", st, err)
	}
	entries, _ := os.ReadDir(node)
	if len(entries) != 3 {
		t.Errorf("secrets directory holds %v, want the three files and no temporary one", entries)
	}
	for name, want := range map[string]string{"ca.pem": "CA-1", "node.pem": "CERT-2", "node-key.pem": "KEY-2"} {
		file := filepath.Join(node, name)
		data, err := os.ReadFile(file)
		st, _ := os.Stat(file)
		if err != nil || string(data) != want || st.Mode().Perm() != 0o400 {
			t.Errorf("%s: %q (mode %v), %v; want %q, mode 0400", name, data, st.Mode().Perm(), err, want)
		}
	}
}

func TestSecretsDirRefuses(t *testing.T) {
	t.Parallel()
	local := t.TempDir()
	writeSecrets(t, local, "nats-1", map[string]string{"ca.pem": "CA", "node.pem": "CERT"})
	writeSecrets(t, local, "nats-2", map[string]string{"ca.pem": "", "node.pem": strings.Repeat("x", remote.MaxSecretSize+1), "node-key.pem": "K"})
	s := remote.SecretsDir{Dir: local, Files: []string{"ca.pem", "node.pem", "node-key.pem"}, RemoteDir: "/var/lib/nats/secrets", Owner: "nats"}
	for _, tc := range []struct {
		node string
		want []string
	}{
		{node: "nats-1", want: []string{"secrets of node nats-1", "node-key.pem", "does not exist"}},
		{node: "nats-2", want: []string{"secrets of node nats-2", "ca.pem", "is empty"}},
		{node: "nats-3", want: []string{"secrets of node nats-3", "ca.pem", "does not exist"}},
		{node: "../etc", want: []string{"not a node name"}},
	} {
		err := s.Check(tc.node)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("Check(%s) = %v, want %q", tc.node, err, w)
			}
		}
		if err := s.Install(t.Context(), tc.node, localRunner{}); err == nil {
			t.Errorf("Install(%s) succeeded", tc.node)
		}
	}
	if err := s.Check("nats-1"); !errors.Is(err, remote.ErrSecretMissing) {
		t.Errorf("missing file: %v, want ErrSecretMissing", err)
	}
	s.Files = []string{"node.pem"}
	if err := s.Check("nats-2"); err == nil || !strings.Contains(err.Error(), "larger than") || strings.Contains(err.Error(), "xxx") {
		t.Errorf("oversized file: %v", err)
	}
}

// TestSecretsDirErrorsHoldNoSecret: a failing install (an owner the node does not know) names the
// step, never the contents.
func TestSecretsDirErrorsHoldNoSecret(t *testing.T) {
	t.Parallel()
	local := t.TempDir()
	writeSecrets(t, local, "nats-1", map[string]string{"node-key.pem": "PRIVATE-KEY-MATERIAL"})
	s := remote.SecretsDir{Dir: local, Files: []string{"node-key.pem"}, RemoteDir: filepath.Join(t.TempDir(), "s"), Owner: "no-such-user-cimdeploy"}
	err := s.Install(t.Context(), "nats-1", localRunner{})
	if err == nil || strings.Contains(err.Error(), "PRIVATE-KEY-MATERIAL") {
		t.Errorf("install as an unknown owner: %v", err)
	}
}

// truncatingRunner hands the command only the first n bytes of its standard input, as a connection
// cut mid-transfer would.
type truncatingRunner struct{ n int64 }

func (r truncatingRunner) Run(ctx context.Context, cmd remote.Cmd) error {
	cmd.Stdin = io.LimitReader(cmd.Stdin, r.n)
	return localRunner{}.Run(ctx, cmd)
}

// TestSecretsDirInstallAllOrNothing: the files travel one after the other on one command's standard
// input (the largest allowed among them, so a read past a file's end would show); when fewer bytes
// arrive than were sent, the install fails naming the file and leaves the installed files as they
// were, with no temporary file behind.
func TestSecretsDirInstallAllOrNothing(t *testing.T) {
	t.Parallel()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	local, node := t.TempDir(), filepath.Join(t.TempDir(), "secrets")
	big := strings.Repeat("k", remote.MaxSecretSize)
	writeSecrets(t, local, "nats-1", map[string]string{"ca.pem": "CA-1", "node-key.pem": big, "node.pem": "CERT-1"})
	s := remote.SecretsDir{Dir: local, Files: []string{"ca.pem", "node-key.pem", "node.pem"}, RemoteDir: node, Owner: me.Username}
	if err := s.Install(t.Context(), "nats-1", localRunner{}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"ca.pem": "CA-1", "node-key.pem": big, "node.pem": "CERT-1"} {
		if data, err := os.ReadFile(filepath.Join(node, name)); err != nil || string(data) != want {
			t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(data), err, len(want))
		}
	}
	writeSecrets(t, local, "nats-1", map[string]string{"ca.pem": "CA-2", "node-key.pem": "KEY-2", "node.pem": "CERT-2"})
	err = s.Install(t.Context(), "nats-1", truncatingRunner{n: 6})
	if err == nil || !strings.Contains(err.Error(), "node-key.pem: 2 of 5 bytes arrived") {
		t.Errorf("install cut short: %v, want the file and its bytes named", err)
	}
	entries, _ := os.ReadDir(node)
	if len(entries) != 3 {
		t.Errorf("secrets directory holds %v after a failed install, want the three files only", entries)
	}
	if data, _ := os.ReadFile(filepath.Join(node, "ca.pem")); string(data) != "CA-1" {
		t.Errorf("ca.pem = %q after a failed install, want the old CA-1", data)
	}
}
