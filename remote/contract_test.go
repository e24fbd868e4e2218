package remote_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/remote"
)

// world is one implementation of remote's interfaces under the contract suite (the lab: pct over
// SSH, sshd, real Nix; or the in-memory fakes), with what the suite needs to look at the hosts
// without going through the code under test, and to break them.
type world struct {
	proxmox remote.Proxmox
	nodes   []remote.Node // two nodes

	// template is the sha256 of the template file called name on Proxmox, if there is one.
	template func(t *testing.T, name string) (string, bool)
	// parts are the partial uploads (.part files) left in the template directory.
	parts func(t *testing.T) []string
	// corrupt changes the content of template file name, keeping its name.
	corrupt func(t *testing.T, name string)
	// smallDisk is the Proxmox host with a template directory that has about free bytes free.
	smallDisk func(t *testing.T, free int64) remote.Proxmox
	// cutUpload runs upload and cuts the Proxmox host's connection once a part of the upload is on
	// the host.
	cutUpload func(t *testing.T, upload func() (remote.Uploaded, error)) (remote.Uploaded, error)
	// has returns the paths of paths that node i's store holds.
	has func(t *testing.T, i int, paths []string) []string
	// newContainer is a container (hostname and vmid) that does not exist yet, with SSH set to the
	// node it will be, and the template file it is created from.
	newContainer func(t *testing.T) (c remote.Container, template string)
	// stopContainer stops container vmid behind the code under test's back.
	stopContainer func(t *testing.T, vmid int)
}

// TestContract runs the contract suite against every implementation.
func TestContract(t *testing.T) {
	for _, impl := range []struct {
		name  string
		world func(t *testing.T) *world
	}{
		{name: "fake", world: fakeWorld},
		{name: "lab", world: labWorld},
	} {
		t.Run(impl.name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				test func(t *testing.T, w *world)
			}{
				{name: "RunStreamsOutputAndExitStatus", test: testRunExitStatus},
				{name: "RunStdin", test: testRunStdin},
				{name: "RunArgvVerbatim", test: testRunArgv},
				{name: "RunMegabytesOfOutput", test: testRunMegabytes},
				{name: "RunRejectsNUL", test: testRunNUL},
				{name: "UploadTemplateThenSkip", test: testUploadSkip},
				{name: "UploadTemplateReplacesCorrupt", test: testUploadCorrupt},
				{name: "UploadTemplateNoSpace", test: testUploadNoSpace},
				{name: "UploadTemplateCutMidway", test: testUploadCut},
				{name: "CopyClosureSendsExactlyTheMissingPaths", test: testCopyClosure},
				{name: "EnsureContainerCreatesStartsAndWaits", test: testEnsureContainer},
				{name: "EnsureContainerPctFailureVerbatim", test: testEnsureContainerFails},
				{name: "StopAndDestroyContainer", test: testStopDestroyContainer},
			} {
				t.Run(tc.name, func(t *testing.T) { tc.test(t, impl.world(t)) })
			}
		})
	}
}

// hostErr checks that err is a *remote.Error naming host and whose message holds want.
func hostErr(t *testing.T, err error, host string, want ...string) *remote.Error {
	t.Helper()
	t.Logf("error: %v", err)
	var re *remote.Error
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T): want a *remote.Error", err, err)
	}
	if re.Host != host {
		t.Errorf("error names host %q, want %q: %v", re.Host, host, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q: want it to say %q", err, w)
		}
	}
	return re
}

func testRunExitStatus(t *testing.T, w *world) {
	n := w.nodes[0]
	var stdout, stderr bytes.Buffer
	err := n.Run(t.Context(), remote.Cmd{Argv: []string{"sh", "-c", "echo out; echo oops >&2; exit 3"}, Stdout: &stdout, Stderr: &stderr})
	hostErr(t, err, n.Name(), "exit status 3", "oops")
	var ee *remote.ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || !strings.Contains(ee.Stderr, "oops") {
		t.Errorf("error %v: want an *ExitError with code 3 and the standard error", err)
	}
	if stdout.String() != "out\n" || stderr.String() != "oops\n" {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	stdout.Reset()
	if err := n.Run(t.Context(), remote.Cmd{Argv: []string{"echo", "hello"}, Stdout: &stdout}); err != nil || stdout.String() != "hello\n" {
		t.Errorf("echo hello: %q, %v", stdout.String(), err)
	}
	err = n.Run(t.Context(), remote.Cmd{Argv: []string{"no-such-program-cimdeploy"}})
	if !errors.As(err, &ee) || ee.Code != 127 {
		t.Errorf("missing program: %v, want exit status 127", err)
	}
}

func testRunStdin(t *testing.T, w *world) {
	n := w.nodes[0]
	in := make([]byte, 3<<20+17)
	_, _ = rand.Read(in)
	var out bytes.Buffer
	if err := n.Run(t.Context(), remote.Cmd{Argv: []string{"cat"}, Stdin: bytes.NewReader(in), Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Errorf("cat returned %d bytes, want the %d sent", out.Len(), len(in))
	}
}

func testRunArgv(t *testing.T, w *world) {
	args := []string{"", "a b", "it's", `"q"`, `\`, "$HOME", "$(reboot)", "`id`", "*", "~", "a=b", "#", ";", "|", "&", "é\xff"}
	var out bytes.Buffer
	if err := w.nodes[1].Run(t.Context(), remote.Cmd{Argv: append([]string{"printf", "%s\n"}, args...), Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); !equalArgv(got, args) {
		t.Errorf("the remote program got %q, want %q", got, args)
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func testRunMegabytes(t *testing.T, w *world) {
	n := w.nodes[0]
	const size = 48 << 20
	var c countWriter
	if err := n.Run(t.Context(), remote.Cmd{Argv: []string{"head", "-c", "50331648", "/dev/zero"}, Stdout: &c}); err != nil {
		t.Fatal(err)
	}
	if c.n != size {
		t.Errorf("got %d bytes, want %d", c.n, size)
	}
	// A writer that fails does not stop the command: it is drained, and the failure reported.
	err := n.Run(t.Context(), remote.Cmd{Argv: []string{"head", "-c", "50331648", "/dev/zero"}, Stdout: failWriter{}})
	if err == nil || !strings.Contains(err.Error(), "disk full here") {
		t.Errorf("failing writer: %v, want its error", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full here") }

func testRunNUL(t *testing.T, w *world) {
	n := w.nodes[0]
	err := n.Run(t.Context(), remote.Cmd{Argv: []string{"echo", "a\x00b"}})
	hostErr(t, err, n.Name(), "NUL")
	err = n.Run(t.Context(), remote.Cmd{})
	hostErr(t, err, n.Name(), "empty argv")
}

// templateFile writes size random bytes to a file and returns its path and sha256.
func templateFile(t *testing.T, size int) (string, string) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	file := filepath.Join(t.TempDir(), "nixos-system.tar.xz")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return file, hex.EncodeToString(sum[:])
}

func testUploadSkip(t *testing.T, w *world) {
	file, sum := templateFile(t, 3<<20+5)
	up, err := w.proxmox.UploadTemplate(t.Context(), remote.Template{Node: "nats-1", File: file})
	if err != nil {
		t.Fatal(err)
	}
	name := "nats-1-" + sum + ".tar.xz"
	if up.Name != name || up.SHA256 != sum || up.Skipped || up.Sent != 3<<20+5 || up.Size != 3<<20+5 ||
		up.Volume != "local:vztmpl/"+name || up.Path != "/var/lib/vz/template/cache/"+name {
		t.Errorf("first upload: %+v, want %s sent whole", up, name)
	}
	if got, ok := w.template(t, name); !ok || got != sum {
		t.Errorf("on the host: %s %t, want sha256 %s", got, ok, sum)
	}
	again, err := w.proxmox.UploadTemplate(t.Context(), remote.Template{Node: "nats-1", File: file})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Skipped || again.Sent != 0 || again.Name != name {
		t.Errorf("second upload: %+v, want skipped with 0 bytes sent", again)
	}
	if p := w.parts(t); len(p) > 0 {
		t.Errorf("partial uploads left: %q", p)
	}
	// The same file for another node is another template.
	other, err := w.proxmox.UploadTemplate(t.Context(), remote.Template{Node: "nats-2", File: file, SHA256: sum})
	if err != nil || other.Skipped || other.Name != "nats-2-"+sum+".tar.xz" {
		t.Errorf("nats-2: %+v, %v", other, err)
	}
	_, err = w.proxmox.UploadTemplate(t.Context(), remote.Template{Node: "../etc", File: file})
	if err == nil {
		t.Error("node ../etc: uploaded, want an error")
	}
}

func testUploadCorrupt(t *testing.T, w *world) {
	file, sum := templateFile(t, 1<<20)
	up, err := w.proxmox.UploadTemplate(t.Context(), remote.Template{Node: "nats-2", File: file})
	if err != nil {
		t.Fatal(err)
	}
	w.corrupt(t, up.Name)
	again, err := w.proxmox.UploadTemplate(t.Context(), remote.Template{Node: "nats-2", File: file})
	if err != nil {
		t.Fatal(err)
	}
	if again.Skipped || again.Sent != 1<<20 {
		t.Errorf("upload over a corrupt file: %+v, want it sent again", again)
	}
	if got, _ := w.template(t, up.Name); got != sum {
		t.Errorf("on the host: %s, want %s", got, sum)
	}
}

func testUploadNoSpace(t *testing.T, w *world) {
	small := w.smallDisk(t, 1<<20)
	file, sum := templateFile(t, 2<<20)
	_, err := small.UploadTemplate(t.Context(), remote.Template{Node: "nats-1", File: file})
	hostErr(t, err, "pve", "upload template nats-1", "not enough free space")
	if !errors.Is(err, remote.ErrNoSpace) {
		t.Errorf("%v: want ErrNoSpace", err)
	}
	if _, ok := w.template(t, "nats-1-"+sum+".tar.xz"); ok {
		t.Error("a template is under its final name")
	}
}

func testUploadCut(t *testing.T, w *world) {
	const size = 256 << 20
	file, sum := templateFile(t, size)
	tmpl := remote.Template{Node: "nats-1", File: file, SHA256: sum}
	up, err := w.cutUpload(t, func() (remote.Uploaded, error) { return w.proxmox.UploadTemplate(t.Context(), tmpl) })
	hostErr(t, err, "pve", "upload template nats-1")
	if !errors.Is(err, remote.ErrConnectionLost) {
		t.Errorf("%v: want ErrConnectionLost", err)
	}
	if up.Sent == 0 || up.Sent >= size {
		t.Errorf("sent %d bytes before the cut, want some", up.Sent)
	}
	if _, ok := w.template(t, up.Name); ok {
		t.Error("a cut upload is under the template's final name")
	}
	if p := w.parts(t); len(p) > 0 {
		t.Errorf("the cut upload left %q", p)
	}
	again, err := w.proxmox.UploadTemplate(t.Context(), tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if again.Skipped || again.Sent != size {
		t.Errorf("upload after the cut: %+v, want it sent whole", again)
	}
	if got, _ := w.template(t, again.Name); got != sum {
		t.Errorf("on the host: %s, want %s", got, sum)
	}
}

// closureChain adds a chain of n new store paths to the local store (path i references path i-1) and
// returns them, references first.
func closureChain(t *testing.T, n int) []string {
	t.Helper()
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	expr := `let p0 = builtins.toFile "cimdeploy-test-0" "` + hex.EncodeToString(nonce) + `"; `
	for i := 1; i < n; i++ {
		expr += "p" + strconv.Itoa(i) + ` = builtins.toFile "cimdeploy-test-` + strconv.Itoa(i) + `" "ref ${p` + strconv.Itoa(i-1) + `}"; `
	}
	expr += "in [ "
	for i := range n {
		expr += "p" + strconv.Itoa(i) + " "
	}
	expr += "]"
	out, err := exec.CommandContext(t.Context(), "nix-instantiate", "--eval", "--strict", "--read-write-mode", "--json", "-E", expr).Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v%s", err, stderrOf(err))
	}
	var paths []string
	for _, f := range strings.Split(strings.Trim(strings.TrimSpace(string(out)), "[]"), ",") {
		paths = append(paths, strings.Trim(f, `"`))
	}
	if len(paths) != n {
		t.Fatalf("nix-instantiate: %s", out)
	}
	return paths
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ": " + string(ee.Stderr)
	}
	return ""
}

func testCopyClosure(t *testing.T, w *world) {
	chain := closureChain(t, 4)
	n := w.nodes[0]
	if have := w.has(t, 0, chain); len(have) > 0 {
		t.Fatalf("the node has %q already", have)
	}
	got, err := n.CopyClosure(t.Context(), []string{chain[2]})
	if err != nil {
		t.Fatal(err)
	}
	if !equalArgv(got.Missing, chain[:3]) || got.Closure != 3 || got.Sent == 0 {
		t.Errorf("first copy: %+v, want exactly %q", got, chain[:3])
	}
	if have := w.has(t, 0, chain); !equalArgv(have, chain[:3]) {
		t.Errorf("the node has %q, want %q", have, chain[:3])
	}
	got, err = n.CopyClosure(t.Context(), []string{chain[3]})
	if err != nil {
		t.Fatal(err)
	}
	if !equalArgv(got.Missing, chain[3:]) || got.Closure != 4 {
		t.Errorf("second copy: %+v, want exactly %q", got, chain[3:])
	}
	got, err = n.CopyClosure(t.Context(), []string{chain[3]})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Missing) != 0 || got.Sent != 0 {
		t.Errorf("third copy: %+v, want nothing sent", got)
	}
	if have := w.has(t, 1, chain); len(have) > 0 {
		t.Errorf("the other node got %q", have)
	}
	_, err = n.CopyClosure(t.Context(), []string{"/etc/passwd"})
	hostErr(t, err, n.Name(), "copy closure")
}

func testEnsureContainer(t *testing.T, w *world) {
	ctx := t.Context()
	c, file := w.newContainer(t)
	up, err := w.proxmox.UploadTemplate(ctx, remote.Template{Node: c.Hostname, File: file})
	if err != nil {
		t.Fatal(err)
	}
	c.Template = up.Volume
	if st, err := w.proxmox.Status(ctx, c.VMID); err != nil || st != remote.ContainerMissing {
		t.Fatalf("status before: %s, %v; want missing", st, err)
	}
	res, err := w.proxmox.EnsureContainer(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || !res.Started || res.Recreated || res.VMID != c.VMID || !strings.HasPrefix(res.HostKey, "SHA256:") {
		t.Errorf("ensure a missing container: %+v, want created and started, its host key pinned", res)
	}
	if st, err := w.proxmox.Status(ctx, c.VMID); err != nil || st != remote.ContainerRunning {
		t.Errorf("status after: %s, %v; want running", st, err)
	}
	if err := c.SSH.Run(ctx, remote.Cmd{Argv: []string{"true"}}); err != nil {
		t.Errorf("ssh to the new container: %v", err)
	}
	again, err := w.proxmox.EnsureContainer(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || again.Started || again.Recreated || len(again.Drift) > 0 {
		t.Errorf("ensure again: %+v, want nothing done", again)
	}
	bigger := c
	bigger.Cores++
	drifted, err := w.proxmox.EnsureContainer(ctx, bigger)
	if err != nil {
		t.Fatal(err)
	}
	if drifted.Created || drifted.Recreated || len(drifted.Drift) != 1 || !strings.HasPrefix(drifted.Drift[0], "cores: ") {
		t.Errorf("ensure with more cores: %+v, want the drift reported and nothing changed", drifted)
	}
	// A stopped container is started, not created again.
	w.stopContainer(t, c.VMID)
	if st, err := w.proxmox.Status(ctx, c.VMID); err != nil || st != remote.ContainerStopped {
		t.Fatalf("status after stop: %s, %v; want stopped", st, err)
	}
	started, err := w.proxmox.EnsureContainer(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if started.Created || started.Recreated || !started.Started {
		t.Errorf("ensure a stopped container: %+v, want it started", started)
	}
	if err := c.SSH.Run(ctx, remote.Cmd{Argv: []string{"true"}}); err != nil {
		t.Errorf("ssh to the started container: %v", err)
	}
	// Recreate only when asked.
	re := c
	re.Recreate = true
	recreated, err := w.proxmox.EnsureContainer(ctx, re)
	if err != nil {
		t.Fatal(err)
	}
	if recreated.Created || !recreated.Recreated || !recreated.Started || recreated.HostKey == "" || recreated.HostKey == res.HostKey {
		t.Errorf("ensure with Recreate: %+v, want it recreated and started with a new host key (was %s)", recreated, res.HostKey)
	}
	if err := c.SSH.Run(ctx, remote.Cmd{Argv: []string{"true"}}); err != nil {
		t.Errorf("ssh to the recreated container: %v", err)
	}
	foreign := c
	foreign.Hostname = "someone-else"
	_, err = w.proxmox.EnsureContainer(ctx, foreign)
	hostErr(t, err, "pve", "refusing")
	if !errors.Is(err, remote.ErrForeignContainer) {
		t.Errorf("%v: want ErrForeignContainer", err)
	}
	if st, _ := w.proxmox.Status(ctx, c.VMID); st != remote.ContainerRunning {
		t.Errorf("after the refused ensure: %s, want the container still running", st)
	}
}

func testEnsureContainerFails(t *testing.T, w *world) {
	ctx := t.Context()
	c, _ := w.newContainer(t)
	c.Template = "local:vztmpl/" + c.Hostname + "-" + strings.Repeat("0", 64) + ".tar.xz" // never uploaded
	_, err := w.proxmox.EnsureContainer(ctx, c)
	re := hostErr(t, err, "pve", "pct create", "does not exist")
	var ee *remote.ExitError
	if !errors.As(err, &ee) || ee.Code == 0 || !strings.Contains(ee.Stderr, c.Template) {
		t.Errorf("%v (step %q): want pct's exit status and its output verbatim", err, re.Step)
	}
	if st, _ := w.proxmox.Status(ctx, c.VMID); st != remote.ContainerMissing {
		t.Errorf("after the failed create: %s, want missing", st)
	}
	bad := c
	bad.Bridge = "vmbr0,firewall=0"
	if _, err := w.proxmox.EnsureContainer(ctx, bad); err == nil || !strings.Contains(err.Error(), "bridge") {
		t.Errorf("bridge with a comma: %v, want it refused", err)
	}
}

// testStopDestroyContainer: a container created with a root disk size and start on boot (pct's own
// syntax, which the lab's pct checks) is stopped, refused to a wrong hostname, destroyed; stopping or
// destroying what is already so is no error.
func testStopDestroyContainer(t *testing.T, w *world) {
	ctx := t.Context()
	lc, ok := w.proxmox.(remote.Lifecycle)
	if !ok {
		t.Fatalf("%T is no remote.Lifecycle", w.proxmox)
	}
	c, file := w.newContainer(t)
	up, err := w.proxmox.UploadTemplate(ctx, remote.Template{Node: c.Hostname, File: file})
	if err != nil {
		t.Fatal(err)
	}
	c.Template, c.RootfsGiB, c.OnBoot = up.Volume, 8, true
	if _, err := w.proxmox.EnsureContainer(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := lc.DestroyContainer(ctx, c.VMID, c.Hostname); err == nil || !strings.Contains(err.Error(), "running") {
		t.Errorf("destroy a running container: %v, want refused", err)
	}
	if _, err := lc.StopContainer(ctx, c.VMID, "someone-else"); !errors.Is(err, remote.ErrForeignContainer) {
		t.Errorf("stop under another hostname: %v, want ErrForeignContainer", err)
	}
	was, err := lc.StopContainer(ctx, c.VMID, c.Hostname)
	if err != nil || was != remote.ContainerRunning {
		t.Fatalf("stop: was %s, %v", was, err)
	}
	if st, _ := w.proxmox.Status(ctx, c.VMID); st != remote.ContainerStopped {
		t.Errorf("status after stop: %s", st)
	}
	if was, err := lc.StopContainer(ctx, c.VMID, c.Hostname); err != nil || was != remote.ContainerStopped {
		t.Errorf("stop again: was %s, %v; want stopped, no error", was, err)
	}
	if err := lc.DestroyContainer(ctx, c.VMID, "someone-else"); !errors.Is(err, remote.ErrForeignContainer) {
		t.Errorf("destroy under another hostname: %v, want ErrForeignContainer", err)
	}
	if err := lc.DestroyContainer(ctx, c.VMID, c.Hostname); err != nil {
		t.Fatal(err)
	}
	if st, _ := w.proxmox.Status(ctx, c.VMID); st != remote.ContainerMissing {
		t.Errorf("status after destroy: %s", st)
	}
	if err := lc.DestroyContainer(ctx, c.VMID, c.Hostname); err != nil {
		t.Errorf("destroy a missing container: %v", err)
	}
}
