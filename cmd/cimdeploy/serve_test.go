package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/gitops/forge/forgetest"
)

// TestServe runs `cimdeploy serve` as its own process against the lab, GitHub's REST API emulated
// (forgetest, checked against GitHub's OpenAPI description), and works it the way GitHub does: signed
// deliveries of real shapes for a repository with history. A signed push deploys its commit to every
// node with the statuses and the deployment reported in order; a pull request is validated only; a
// repeated delivery, a tag push and a bad signature start nothing; an unsigned head is refused; and
// a delivery queued while deploys are paused survives kill -9 of serve and runs after the restart.
func TestServe(t *testing.T) {
	l := lab.Start(t, lab.Options{Nodes: 3})
	if _, err := l.Repo(t.Context()); err != nil {
		t.Fatal(err)
	}
	repo := newUserRepo(t, l.RepoDir())
	signers := repo.signWithSSH(t)

	const ghRepo, token = "acme/infra", "ghs_serveTestToken0123456789abcdef"
	gh := forgetest.NewServer(t, forgetest.WithToken(token))
	dir := t.TempDir()
	secret := writeFile(t, dir, "webhook-secret", "s3cr3t-for-the-serve-test\n")
	tokenFile := writeFile(t, dir, "github-token", token+"\n")
	data := filepath.Join(dir, "data")
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--repo", repo.dir, "--github-repository", ghRepo, "--webhook-secret-file", secret,
		"--github-token-file", tokenFile, "--github-api-url", gh.URL + "/", "--public-url", "https://cimdeploy.example.com",
		"--trusted-signers", signers, "--proxmox-host", l.PVE().Address().String(), "--log-level", "info"},
		labFlags(l, data)...)
	srv := startServe(t, args)
	hook := &sender{t: t, secret: []byte("s3cr3t-for-the-serve-test"), repo: ghRepo}
	// cli runs a command on serve's data directory, which shares serve's store, and the lab's nodes.
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(args, clusterFlags(l, data)...)...)
	}
	// ctl runs a command that steers serve through its store.
	ctl := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(args, "--data-dir", data)...)
	}
	running := func(commit string) {
		t.Helper()
		for _, n := range l.Nodes() {
			code, stdout, stderr := cli("generations", "--node", n.Name(), "--json", "--repo", repo.dir, "--rev", commit)
			var gens []generation
			if err := json.Unmarshal([]byte(stdout), &gens); code != exitOK || err != nil {
				t.Fatalf("generations --node %s = %d, %v\n%s\n%s", n.Name(), code, err, stdout, stderr)
			}
			if i := slices.IndexFunc(gens, func(g generation) bool { return g.Running }); i < 0 || gens[i].Revision != commit {
				t.Errorf("%s runs %+v, want the generation of %s", n.Name(), gens, commit)
			}
		}
	}

	// A signed push to main deploys; a pull request opened meanwhile is validated beside it.
	second := repo.commit(t, "nats: lame duck 45s", map[string]any{"lame_duck_duration": "45s"})
	repo.git(t, "checkout", "-q", "-b", "feature")
	pr := repo.commit(t, "nats: lame duck 2m", map[string]any{"lame_duck_duration": "2m"})
	repo.git(t, "checkout", "-q", "main")
	repo.git(t, "update-ref", "refs/pull/7/head", pr)
	repo.git(t, "branch", "-q", "-D", "feature")
	push := hook.push("refs/heads/main", second)
	if code, body := srv.post(t, push); code != http.StatusAccepted || !strings.Contains(body, "queued") {
		t.Fatalf("push: %d %q", code, body)
	}
	if code, body := srv.post(t, hook.pullRequest("opened", 7, pr)); code != http.StatusAccepted {
		t.Fatalf("pull_request: %d %q", code, body)
	}
	waitStatus(t, gh, srv, second, "cimdeploy/deploy", "success", 8*time.Minute)
	waitStatus(t, gh, srv, pr, "cimdeploy/validate", "success", 4*time.Minute)
	wantInOrder(t, reports(gh, second), []string{
		"status cimdeploy/validate pending", "status cimdeploy/deploy pending", "deployment production",
		"deployment_status in_progress", "status cimdeploy/validate success", "status cimdeploy/deploy success",
		"deployment_status success",
	})
	for _, r := range reports(gh, pr) {
		if strings.Contains(r, "cimdeploy/deploy") || strings.HasPrefix(r, "deployment") {
			t.Errorf("the pull request's head got %q: a pull request is validated only", r)
		}
	}
	for _, st := range gh.Accepted("repos/create-commit-status") {
		if u, _ := st.Body["target_url"].(string); !strings.HasPrefix(u, "https://cimdeploy.example.com/runs/") {
			t.Errorf("status target_url %q, want the run's page", u)
		}
	}
	running(second)

	// The same delivery again, a tag push and a bad signature start nothing.
	runsBefore := srv.runs(t)
	if code, body := srv.post(t, push); code != http.StatusAccepted || !strings.Contains(body, "duplicate") {
		t.Errorf("the same delivery again: %d %q", code, body)
	}
	if code, body := srv.post(t, hook.push("refs/tags/v1.0", second)); code != http.StatusAccepted || !strings.Contains(body, "ignored") {
		t.Errorf("tag push: %d %q", code, body)
	}
	forged := hook.push("refs/heads/main", second)
	forged.signature = "sha256=" + strings.Repeat("0", 64)
	if code, _ := srv.post(t, forged); code != http.StatusUnauthorized {
		t.Errorf("bad signature: %d, want 401", code)
	}
	if got := srv.runs(t); got != runsBefore {
		t.Errorf("%d runs after a duplicate, a tag push and a forged delivery, want %d", got, runsBefore)
	}
	if !strings.Contains(srv.get(t, "/readyz"), "0 job(s) queued") {
		t.Errorf("readyz: %q", srv.get(t, "/readyz"))
	}

	// An unsigned head is not deployed.
	repo.git(t, "config", "commit.gpgsign", "false")
	unsigned := repo.commit(t, "nats: lame duck 50s (unsigned)", map[string]any{"lame_duck_duration": "50s"})
	repo.git(t, "config", "commit.gpgsign", "true")
	srv.post(t, hook.push("refs/heads/main", unsigned))
	desc := waitStatus(t, gh, srv, unsigned, "cimdeploy/deploy", "failure", 4*time.Minute)
	if !strings.Contains(desc, "not signed") {
		t.Errorf("the unsigned head's deploy status says %q, want why", desc)
	}
	running(second)

	// Paused, a push is queued and not started; kill -9; after the restart and a resume it deploys.
	if code, out, stderr := ctl("pause", "--reason", "serve test"); code != exitOK {
		t.Fatalf("pause = %d %s %s", code, out, stderr)
	}
	fourth := repo.commit(t, "nats: lame duck 55s", map[string]any{"lame_duck_duration": "55s"})
	if code, body := srv.post(t, hook.push("refs/heads/main", fourth)); code != http.StatusAccepted {
		t.Fatalf("push while paused: %d %q", code, body)
	}
	time.Sleep(2 * time.Second) // a deploy would have started by now; paused, none does
	if ready := srv.get(t, "/readyz"); !strings.Contains(ready, "1 job(s) queued") {
		t.Fatalf("paused, the push is not waiting in the queue: %q", ready)
	}
	srv.kill(t)
	srv = startServe(t, args)
	if code, out, stderr := ctl("resume"); code != exitOK {
		t.Fatalf("resume = %d %s %s", code, out, stderr)
	}
	waitStatus(t, gh, srv, fourth, "cimdeploy/deploy", "success", 8*time.Minute)
	running(fourth)
	if metrics := srv.get(t, "/metrics"); !strings.Contains(metrics, `cimdeploy_runs_total{kind="deploy",result="success"} 1`) {
		t.Errorf("metrics after the restart lack the deploy:\n%s", grepLines(metrics, "cimdeploy_runs_total"))
	}
}

// generation is what `cimdeploy generations --json` says of one generation.
type generation struct {
	Running  bool   `json:"running"`
	Revision string `json:"revision"`
}

// servd is a `cimdeploy serve` process.
type servd struct {
	cmd  *exec.Cmd
	url  string // http://127.0.0.1:port
	done chan struct{}
	mu   sync.Mutex
	out  bytes.Buffer
}

// startServe starts the test binary as cimdeploy (execMain) with args and waits for it to listen.
func startServe(t testing.TB, args []string) *servd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := &servd{cmd: exec.Command(self, args...), done: make(chan struct{})}
	s.cmd.Env = append(os.Environ(), execMain+"=1")
	pr, pw := io.Pipe()
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := regexp.MustCompile(`listening on (http://\S+)`)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.out.WriteString(line + "\n")
			if m := listening.FindStringSubmatch(line); m != nil && s.url == "" {
				s.url = m[1]
				close(ready)
			}
			s.mu.Unlock()
		}
	}()
	go func() {
		_ = s.cmd.Wait()
		pw.Close()
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(time.Minute):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("serve's output:\n%s", s.output())
		}
	})
	select {
	case <-ready:
	case <-s.done:
		t.Fatalf("serve ended before listening:\n%s", s.output())
	case <-time.After(3 * time.Minute):
		t.Fatalf("serve did not listen within 3m:\n%s", s.output())
	}
	return s
}

func (s *servd) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// kill ends serve with SIGKILL, as a crash or the OOM killer would.
func (s *servd) kill(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.done
}

func (s *servd) post(t *testing.T, d delivery) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.url+"/webhooks/github", bytes.NewReader(d.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", d.event)
	req.Header.Set("X-GitHub-Delivery", d.id)
	req.Header.Set("X-Hub-Signature-256", d.signature)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (s *servd) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(s.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// runs counts the runs the run list shows.
func (s *servd) runs(t *testing.T) int {
	return strings.Count(s.get(t, "/runs"), `<tr><td><a href="/runs/`)
}

// delivery is one webhook delivery as GitHub sends it.
type delivery struct {
	event, id, signature string
	body                 []byte
}

// sender makes signed deliveries for one repository.
type sender struct {
	t      *testing.T
	secret []byte
	repo   string
}

func (s *sender) delivery(event string, payload map[string]any) delivery {
	body, err := json.Marshal(payload)
	if err != nil {
		s.t.Fatal(err)
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	mac := hmac.New(sha256.New, s.secret)
	mac.Write(body)
	h := hex.EncodeToString(id[:])
	return delivery{event: event, body: body, signature: "sha256=" + hex.EncodeToString(mac.Sum(nil)),
		id: h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]}
}

func (s *sender) push(ref, after string) delivery {
	return s.delivery("push", map[string]any{"ref": ref, "before": strings.Repeat("0", 40), "after": after,
		"created": false, "deleted": false, "forced": false,
		"repository": map[string]any{"full_name": s.repo, "clone_url": "https://evil.example/steal.git"},
		"sender":     map[string]any{"login": "operator"}})
}

func (s *sender) pullRequest(action string, number int, head string) delivery {
	repo := map[string]any{"full_name": s.repo}
	return s.delivery("pull_request", map[string]any{"action": action, "number": number,
		"pull_request": map[string]any{"number": number, "head": map[string]any{"sha": head, "repo": repo},
			"base": map[string]any{"repo": repo}},
		"repository": repo, "sender": map[string]any{"login": "contributor"}})
}

// reports are the GitHub calls made for commit sha, in order: "status <context> <state>", "deployment
// <environment>", "deployment_status <state>" (of the deployments of sha).
func reports(gh *forgetest.Server, sha string) []string {
	var out []string
	deployments := map[string]bool{} // ids of the deployments of sha
	for _, r := range gh.Requests() {
		if r.Status >= 300 {
			continue
		}
		switch r.OperationID {
		case "repos/create-commit-status":
			if r.Params["sha"] == sha {
				out = append(out, fmt.Sprintf("status %v %v", r.Body["context"], r.Body["state"]))
			}
		case "repos/create-deployment":
			if r.Body["ref"] == sha {
				deployments[fmt.Sprint(r.Response["id"])] = true
				out = append(out, fmt.Sprintf("deployment %v", r.Body["environment"]))
			}
		case "repos/create-deployment-status":
			if deployments[r.Params["deployment_id"]] {
				out = append(out, fmt.Sprintf("deployment_status %v", r.Body["state"]))
			}
		}
	}
	return out
}

// wantInOrder checks that want appears in got in that order (other reports may come between).
func wantInOrder(t *testing.T, got, want []string) {
	t.Helper()
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("GitHub reports %q, want in order %q (missing from %q on)", got, want, want[i])
	}
}

// waitStatus waits for the commit status context of sha to reach state and returns its description.
func waitStatus(t *testing.T, gh *forgetest.Server, srv *servd, sha, context, state string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var last map[string]any
		for _, r := range gh.Accepted("repos/create-commit-status") {
			if r.Params["sha"] == sha && r.Body["context"] == context {
				last = r.Body
			}
		}
		if last != nil && last["state"] == state {
			desc, _ := last["description"].(string)
			return desc
		}
		if last != nil && last["state"] != "pending" {
			t.Fatalf("%s of %s is %v (%v), want %s\nserve:\n%s", context, short(sha), last["state"], last["description"], state, srv.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s of %s not %s within %s (last %v)\nserve:\n%s", context, short(sha), state, within, last, srv.output())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// signWithSSH makes the repository sign its commits with a new SSH key, as `git commit -S` with
// gpg.format=ssh does, and returns an allowed-signers file trusting that key for git.
func (r *userRepo) signWithSSH(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "signing-key")
	if out, err := exec.CommandContext(t.Context(), "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	r.git(t, "config", "gpg.format", "ssh")
	r.git(t, "config", "user.signingkey", key)
	r.git(t, "config", "commit.gpgsign", "true")
	return writeFile(t, dir, "allowed_signers", `operator@example.com namespaces="git" `+string(pub))
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// grepLines are the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestServeRefusesToStart: serve does not start without a non-empty webhook secret, the repository
// whose deliveries it takes, or a listen address it can parse; each is a usage error naming the setting.
func TestServeRefusesToStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := writeFile(t, dir, "empty", "\n")
	secret := writeFile(t, dir, "secret", "s3cr3t\n")
	base := []string{"serve", "--repo", dir, "--data-dir", filepath.Join(dir, "data"), "--ssh-key-file", secret, "--ssh-known-hosts", secret}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--github-repository", "acme/infra"}, "CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE is required"},
		{[]string{"--github-repository", "acme/infra", "--webhook-secret-file", empty}, "empty"},
		{[]string{"--github-repository", "acme/infra", "--webhook-secret-file", filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"--webhook-secret-file", secret}, "--github-repository (CIMDEPLOY_GITHUB_REPOSITORY) is required"},
		{[]string{"--github-repository", "acme/infra", "--webhook-secret-file", secret, "--listen", "8420"}, "CIMDEPLOY_LISTEN"},
	} {
		code, _, stderr := runCLI(t, append(base, tt.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("serve %v = %d %q, want %d and %q", tt.args, code, stderr, exitUsage, tt.want)
		}
		if strings.Contains(stderr, "s3cr3t") {
			t.Errorf("serve %v shows the secret: %q", tt.args, stderr)
		}
	}
}
