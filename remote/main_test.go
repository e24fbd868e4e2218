package remote_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/nixrunner/nixtest"
	"github.com/cimdeploy/cimdeploy/remote"
)

// shared is the package's lab: pve and two nodes. Tests leave it as they found it.
var shared = &lab.Shared{Options: lab.Options{Nodes: 2}}

// argvHelperEnv makes the test binary print its arguments (hex, one a line) and exit: the program
// FuzzJoin runs through sh -c.
const argvHelperEnv = "CIMDEPLOY_REMOTE_ARGV_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(argvHelperEnv) == "1" {
		for _, a := range os.Args[1:] {
			fmt.Println(hex.EncodeToString([]byte(a)))
		}
		os.Exit(0)
	}
	// The closure copies read the controller's store with its nix-store (or nix copy): those tests run
	// once more per Nix version (nixtest); the rest runs no nix on this side.
	os.Exit(nixtest.Main(func() int { return shared.Main(leakChecked{m}) },
		"-test.run=^(TestNixCopyMethod|TestContract)$/^(jump=.*|lab)$/^(CopyClosure.*)?$"))
}

// leakChecked runs the tests, then fails the run if a goroutine of this package or of the SSH
// library outlived the tests (every Pool is closed by then).
type leakChecked struct{ m *testing.M }

func (l leakChecked) Run() int {
	code := l.m.Run()
	if code == 0 {
		if leaked := waitNoLeaks(10 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked after the tests:\n%s\n", leaked)
			return 1
		}
	}
	return code
}

// leakRE matches goroutines that must not outlive a closed Pool.
var leakRE = regexp.MustCompile(`cimdeploy/remote\.|golang\.org/x/crypto/ssh|github\.com/pkg/sftp`)

// waitNoLeaks polls until no goroutine matches leakRE, up to timeout, and returns the leaked ones.
func waitNoLeaks(timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		buf := make([]byte, 1<<22)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if leakRE.MatchString(g) && !strings.Contains(g, "waitNoLeaks") && !strings.Contains(g, "testing.tRunner") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		<-tick.C
	}
}

// labConfig is the remote configuration of the lab: its key and known_hosts, short timeouts.
func labConfig(l *lab.Lab) remote.Config {
	return remote.Config{
		User:           "root",
		Port:           22,
		KeyFile:        l.ClientKey(),
		KnownHosts:     l.KnownHosts(),
		ConnectTimeout: 5 * time.Second,
		// A busy CI machine may leave a keepalive unanswered for a second or two while it copies;
		// the tests that need a dead connection found fast set their own.
		Keepalive:      time.Second,
		KeepaliveMax:   4,
		MaxSessions:    8,
		ProxmoxHost:    l.PVE().Address().String(),
		ProxmoxStorage: "local",
		TemplateDir:    "/var/lib/vz/template/cache",
		BootTimeout:    30 * time.Second,
		ClosureCopy:    remote.CopyExport,
	}
}

// newPool is a Pool closed when the test ends, logging to the test log.
func newPool(t testing.TB, cfg remote.Config) (*remote.Pool, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	p, err := remote.NewPool(cfg, remote.Options{Logger: testLogger(t), Output: out})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("pool close: %v", err)
		}
	})
	return p, out
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// client is the Client of a lab host.
func client(t testing.TB, p *remote.Pool, name, addr string) *remote.Client {
	t.Helper()
	c, err := p.Client(remote.Host{Name: name, Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// poll calls f until it reports true or timeout passes.
func poll(t testing.TB, ctx context.Context, timeout time.Duration, what string, f func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !f() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s", what, timeout)
		case <-tick.C:
		}
	}
}
