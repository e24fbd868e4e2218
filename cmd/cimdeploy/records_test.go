package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// grepTree reports the files under dir that contain secret.
func grepTree(t *testing.T, dir, secret string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if data, err := os.ReadFile(path); err == nil && bytes.Contains(data, []byte(secret)) {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// TestNoSecretInAnyOutput: a token in a repository URL, or in the token file of a repository whose
// server echoes it back, appears nowhere: not in stdout, stderr, the run log or the store.
func TestNoSecretInAnyOutput(t *testing.T) {
	t.Parallel()
	const secret = "ghp_s3cr3tT0ken"
	// A git server that refuses every request, quoting what it was sent, as some proxies do.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "refused: "+r.Header.Get("Authorization")+" "+r.URL.String(), http.StatusInternalServerError)
	}))
	t.Cleanup(echo.Close)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600)
	refused := refusedAddr(t)
	key, kh := sshIdentity(t)

	tests := []struct {
		name string
		args []string
		code int
	}{
		{name: "https URL with user and token", args: []string{"--repo", "https://x-access-token:" + secret + "@" + refused + "/infra.git"}, code: exitUsage},
		{name: "https URL with a token as user", args: []string{"--repo", "https://" + secret + "@" + refused + "/infra.git"}, code: exitUsage},
		{name: "ssh URL with a password", args: []string{"--repo", "ssh://git:" + secret + "@" + refused + "/infra.git", "--git-ssh-key-file", key, "--git-known-hosts", kh}, code: exitUsage},
		{name: "token file, server echoes it", args: []string{"--repo", echo.URL + "/infra.git", "--git-token-file", tokenFile}, code: exitInfra},
		{name: "token file, server refuses", args: []string{"--repo", "http://" + refused + "/infra.git", "--git-token-file", tokenFile}, code: exitInfra},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data := t.TempDir()
			args := append([]string{"run", "--validate-only", "--data-dir", data, "--log-level", "debug"}, tt.args...)
			code, stdout, stderr := runCLI(t, args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s\n%s", code, tt.code, stdout, stderr)
			}
			code, listed, runsErr := runCLI(t, "runs", "--json", "--data-dir", data)
			if code != exitOK {
				t.Errorf("runs = %d\n%s", code, runsErr)
			}
			// The token as it is, and as HTTP basic auth sends it.
			for _, secret := range []string{secret, base64.StdEncoding.EncodeToString([]byte("x-access-token:" + secret))} {
				if strings.Contains(stdout, secret) || strings.Contains(stderr, secret) || strings.Contains(listed, secret) {
					t.Errorf("the secret is in the output or the history:\nstdout:\n%s\nstderr:\n%s\nruns:\n%s", stdout, stderr, listed)
				}
				// The run log and every file of the store (JetStream's files are not compressed).
				if found := grepTree(t, data, secret); len(found) > 0 {
					t.Errorf("the secret is in %v", found)
				}
			}
		})
	}
}

// TestRunsShowsAnInterruptedRunFailed: a run whose process died is failed at the next command that
// opens the store, with why, and `cimdeploy runs` shows it so.
func TestRunsShowsAnInterruptedRunFailed(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	st, err := store.Open(t.Context(), store.Config{DataDir: data}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := pipeline.NewRunID()
	run := pipeline.Run{ID: id, Repo: "/srv/infra", Ref: "main", Commit: strings.Repeat("c", 40), Kind: pipeline.KindValidate}
	seq := uint64(0)
	for _, ev := range []struct {
		typ  string
		data any
	}{
		{pipeline.RunQueued, pipeline.RunData{Run: run}},
		{pipeline.RunStarted, pipeline.RunData{Run: run}},
		{pipeline.StageStarted, pipeline.StageData{Stage: "generate"}},
	} {
		raw, _ := json.Marshal(ev.data)
		seq++
		if err := st.Report(t.Context(), pipeline.Event{EventID: fmt.Sprintf("%s-%d", id, seq), AggregateID: id, Sequence: seq,
			Timestamp: time.Now().UTC(), CorrelationID: id, Type: ev.typ, Data: raw}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close() // the process ends without RunFinished (a crash would not even release its lease)

	code, stdout, stderr := runCLI(t, "runs", "--json", "--data-dir", data)
	var runs []store.RunSummary
	if err := json.Unmarshal([]byte(stdout), &runs); code != exitOK || err != nil || len(runs) != 1 {
		t.Fatalf("runs = %d, %v\n%s\n%s", code, err, stdout, stderr)
	}
	if r := runs[0]; r.Status != pipeline.StatusFailed || r.Stage != "generate" ||
		r.Error != store.Interrupted+" (last recorded: stage generate running)" {
		t.Errorf("interrupted run listed as %+v", r)
	}
	code, stdout, _ = runCLI(t, "runs", "--data-dir", data)
	if code != exitOK || !strings.Contains(stdout, id+"  failed") || !strings.Contains(stdout, "generate  interrupted: the process that ran it ended") {
		t.Errorf("runs = %d\n%s", code, stdout)
	}
}

// commitRepo commits the working tree of repo.
func commitRepo(t *testing.T, repo, msg string) {
	t.Helper()
	for _, args := range [][]string{{"add", "-A"}, {"commit", "-qm", msg}} {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@cim.local"}, args...)...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatal(err, string(out))
		}
	}
}

// TestFailedRunSaysWhy: without opening the log, the plain output of `run` and of `generate` shows
// the problems of the events (the first 20, then how many more) and the drift diff.
func TestFailedRunSaysWhy(t *testing.T) {
	t.Parallel()
	t.Run("problems", func(t *testing.T) {
		t.Parallel()
		repo := infraRepo(t)
		for i := range 25 {
			os.WriteFile(filepath.Join(repo, "events", fmt.Sprintf("9%03d-broken.json", i)), []byte("{\"event_id\": \n"), 0o644)
		}
		commitRepo(t, repo, "25 broken events")
		code, stdout, stderr := runCLI(t, append([]string{"run", "--validate-only", "--repo", repo, "--data-dir", t.TempDir()}, nixArgs(t)...)...)
		if code != exitFailed {
			t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
		}
		for _, want := range []string{"problem(s) in the events:\n  events/9000-broken.json", "events/9019-broken.json", "\n  and 5 more\n"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("run output lacks %q:\n%s", want, stdout)
			}
		}
		if strings.Contains(stdout, "9020-broken.json") {
			t.Errorf("run output shows more than 20 problems:\n%s", stdout)
		}

		code, stdout, stderr = runCLI(t, "generate", "--events", filepath.Join(repo, "events"), "--out", t.TempDir())
		if code != exitFailed || !strings.Contains(stderr, "9019-broken.json") || strings.Contains(stderr, "9020-broken.json") ||
			!strings.HasSuffix(stderr, "\n  and 5 more\n") {
			t.Errorf("generate = %d\n%s\n%s", code, stdout, stderr)
		}
	})
	t.Run("drift", func(t *testing.T) {
		t.Parallel()
		repo := infraRepo(t)
		// Every line of topology.nix changed: a diff longer than what the summary shows.
		topo := filepath.Join(repo, "topology.nix")
		data, _ := os.ReadFile(topo)
		os.WriteFile(topo, bytes.ReplaceAll(data, []byte("\n"), []byte(" # edited\n")), 0o644)
		commitRepo(t, repo, "hand edit")
		code, stdout, stderr := runCLI(t, append([]string{"run", "--validate-only", "--repo", repo, "--data-dir", t.TempDir()}, nixArgs(t)...)...)
		if code != exitFailed {
			t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
		}
		for _, want := range []string{"the committed Nix differs from the projection", "--- a/topology.nix", " # edited\n", " more lines\n"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("run output lacks %q:\n%s", want, stdout)
			}
		}
	})
}

// TestGiantValueIsRecordedBounded: a 700 KB node name, echoed into errors, makes a run that fails and
// is recorded as failed, its error bounded, in the history and in the output.
func TestGiantValueIsRecordedBounded(t *testing.T) {
	t.Parallel()
	repo := infraRepo(t)
	name := strings.Repeat("n", 700<<10)
	for _, f := range []string{"0003-node-added-nats-2.json", "0007-service-configured-nats.json"} {
		path := filepath.Join(repo, "events", f)
		data, _ := os.ReadFile(path)
		os.WriteFile(path, bytes.ReplaceAll(data, []byte(`"nats-2"`), []byte(`"`+name+`"`)), 0o644)
	}
	commitRepo(t, repo, "a giant node name")
	data := t.TempDir()
	code, stdout, stderr := runCLI(t, append([]string{"run", "--validate-only", "--repo", repo, "--data-dir", data}, nixArgs(t)...)...)
	if code != exitFailed {
		t.Fatalf("exit %d\n%s\n%s", code, pipeline.Truncate(stdout, 4000), pipeline.Truncate(stderr, 4000))
	}
	if len(stdout)+len(stderr) > 200<<10 {
		t.Errorf("%d bytes of output for one failed run", len(stdout)+len(stderr))
	}
	code, listed, _ := runCLI(t, "runs", "--json", "--data-dir", data)
	var runs []store.RunSummary
	if err := json.Unmarshal([]byte(listed), &runs); code != exitOK || err != nil || len(runs) != 1 {
		t.Fatalf("runs = %d, %v", code, err)
	}
	t.Logf("output %d bytes, recorded error %d bytes", len(stdout)+len(stderr), len(runs[0].Error))
	if r := runs[0]; r.Status != pipeline.StatusFailed || r.Stage != "generate" || len(r.Error) > pipeline.MaxErrorBytes {
		t.Errorf("run recorded %s in %s with an error of %d bytes", r.Status, r.Stage, len(r.Error))
	}
}
