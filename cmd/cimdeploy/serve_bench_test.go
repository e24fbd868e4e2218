package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkServeIdleRSS measures the resident memory of an idle `cimdeploy serve` with its embedded
// NATS JetStream server (the state store and the queue), its GitHub reporter and its HTTP listener:
// the process is started, left idle for 10 s, and its VmRSS read from /proc. Target: under 80 MiB.
func BenchmarkServeIdleRSS(b *testing.B) {
	dir := b.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		b.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	secret := filepath.Join(dir, "secret")
	token := filepath.Join(dir, "token")
	knownHosts := filepath.Join(dir, "known_hosts")
	for path, content := range map[string]string{secret: "s3cr3t\n", token: "ghs_idle\n", knownHosts: ""} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		srv := startServe(b, []string{"serve", "--listen", "127.0.0.1:0", "--repo", dir, "--data-dir", filepath.Join(b.TempDir(), "data"),
			"--github-repository", "acme/infra", "--webhook-secret-file", secret, "--github-token-file", token,
			"--github-api-url", "http://127.0.0.1:9/", "--ssh-key-file", key, "--ssh-known-hosts", knownHosts})
		time.Sleep(10 * time.Second)
		rss := vmRSS(b, srv.cmd.Process.Pid)
		b.ReportMetric(float64(rss)/(1<<20), "RSS-MiB")
		srv.kill(b)
	}
}

// vmRSS is the resident set size of process pid, in bytes.
func vmRSS(b *testing.B, pid int) int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS in /proc/pid/status")
	return 0
}
