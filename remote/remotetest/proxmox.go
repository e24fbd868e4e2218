package remotetest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/cimdeploy/cimdeploy/remote"
)

// Proxmox is a fake remote.Proxmox: a template directory and containers in memory. Nodes attached
// with Attach are reachable exactly while their container runs. Safe for concurrent use.
type Proxmox struct {
	name, storage, dir string
	bootTimeout        time.Duration

	mu         sync.Mutex
	templates  map[string]template
	containers map[int]*container
	nodes      map[string]*Node
	free       int64 // bytes free in the template directory; < 0: unlimited
	cutAfter   int64 // the next upload's connection is cut after this many bytes; < 0: off
	createFail *remote.ExitError
	uploads    int
	onReboot   map[string]func() // by hostname: what a restart does inside the container (reboot.go)
}

var _ remote.Proxmox = (*Proxmox)(nil)

type template struct {
	sha  string
	size int64
}

type container struct {
	c       remote.Container
	running bool
}

// NewProxmox is an empty Proxmox host called name ("pve"), with storage "local", the template
// directory /var/lib/vz/template/cache, unlimited space and a boot timeout of 10s.
func NewProxmox(name string) *Proxmox {
	return &Proxmox{name: name, storage: "local", dir: "/var/lib/vz/template/cache", bootTimeout: 10 * time.Second,
		templates: map[string]template{}, containers: map[int]*container{}, nodes: map[string]*Node{},
		free: -1, cutAfter: -1}
}

// SetFree sets the free space of the template directory; negative means unlimited.
func (p *Proxmox) SetFree(bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free = bytes
}

// CutNextUpload cuts the connection of the next upload that sends more than after bytes.
func (p *Proxmox) CutNextUpload(after int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutAfter = after
}

// FailNextCreate makes the next pct create exit with code, printing taskLog on standard error.
func (p *Proxmox) FailNextCreate(code int, taskLog string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.createFail = &remote.ExitError{Code: code, Stderr: taskLog}
}

// CorruptTemplate changes the content of the template file name (it keeps its name).
func (p *Proxmox) CorruptTemplate(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.templates[name]; ok {
		t.sha = strings.Repeat("0", 64)
		p.templates[name] = t
	}
}

// Templates maps the names in the template directory to their sha256.
func (p *Proxmox) Templates() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := map[string]string{}
	for n, t := range p.templates {
		m[n] = t.sha
	}
	return m
}

// Uploads counts the uploads that sent bytes.
func (p *Proxmox) Uploads() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.uploads
}

// Attach makes the nodes reachable exactly while a running container has their name as hostname.
func (p *Proxmox) Attach(nodes ...*Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range nodes {
		p.nodes[n.Name()] = n
		n.SetUp(p.runningLocked(n.Name()))
	}
}

func (p *Proxmox) runningLocked(hostname string) bool {
	for _, c := range p.containers {
		if c.c.Hostname == hostname && c.running {
			return true
		}
	}
	return false
}

// AddContainer puts a container on the host as if it had been created earlier.
func (p *Proxmox) AddContainer(c remote.Container, running bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.containers[c.VMID] = &container{c: c, running: running}
	if n := p.nodes[c.Hostname]; n != nil {
		n.SetUp(running)
	}
}

// Container is container vmid's settings and state.
func (p *Proxmox) Container(vmid int) (remote.Container, remote.ContainerState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.containers[vmid]
	switch {
	case !ok:
		return remote.Container{}, remote.ContainerMissing
	case c.running:
		return c.c, remote.ContainerRunning
	}
	return c.c, remote.ContainerStopped
}

// UploadTemplate implements remote.Proxmox like remote.PCT: content-addressed, skipped when the same
// sha256 is there, refused without room, and nothing under the final name when the connection is cut.
func (p *Proxmox) UploadTemplate(ctx context.Context, t remote.Template) (remote.Uploaded, error) {
	start := time.Now()
	up := remote.Uploaded{}
	step := "upload template " + t.Node
	fail := func(sub string, err error) (remote.Uploaded, error) {
		up.Duration = time.Since(start)
		if sub != "" {
			step += ": " + sub
		}
		return up, &remote.Error{Host: p.name, Step: step, Err: err}
	}
	if t.Node == "" || strings.ContainsAny(t.Node, "/ ") || strings.HasPrefix(t.Node, ".") {
		return fail("", fmt.Errorf("node name %q: want letters, digits, '.', '_', '-'", t.Node))
	}
	f, err := os.Open(t.File)
	if err != nil {
		return fail("", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return fail("", err)
	}
	up.Size, up.SHA256 = size, hex.EncodeToString(h.Sum(nil))
	up.Name = remote.TemplateName(t.Node, up.SHA256)
	up.Path = path.Join(p.dir, up.Name)
	up.Volume = p.storage + ":vztmpl/" + up.Name
	if err := ctx.Err(); err != nil {
		return fail("", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.templates[up.Name]; ok && old.sha == up.SHA256 {
		up.Skipped = true
		up.Duration = time.Since(start)
		return up, nil
	}
	if p.free >= 0 && p.free < size {
		return fail("", fmt.Errorf("%w in %s: %d bytes free, the template needs %d", remote.ErrNoSpace, p.dir, p.free, size))
	}
	part := path.Join(p.dir, "."+up.Name+".fake.part")
	if p.cutAfter >= 0 && p.cutAfter < size {
		up.Sent, p.cutAfter = p.cutAfter, -1
		return fail("write "+part, fmt.Errorf("%w: connection reset by peer", remote.ErrConnectionLost))
	}
	up.Sent = size
	if old, ok := p.templates[up.Name]; ok && p.free >= 0 {
		p.free += old.size
	}
	if p.free >= 0 {
		p.free -= size
	}
	p.templates[up.Name] = template{sha: up.SHA256, size: size}
	p.uploads++
	up.Duration = time.Since(start)
	return up, nil
}

// Status implements remote.Proxmox.
func (p *Proxmox) Status(ctx context.Context, vmid int) (remote.ContainerState, error) {
	if err := ctx.Err(); err != nil {
		return "", &remote.Error{Host: p.name, Step: fmt.Sprintf("container %d status", vmid), Err: err}
	}
	_, st := p.Container(vmid)
	return st, nil
}

// EnsureContainer implements remote.Proxmox like remote.PCT.
func (p *Proxmox) EnsureContainer(ctx context.Context, c remote.Container) (remote.Ensured, error) {
	start := time.Now()
	res, err := p.ensure(ctx, c)
	res.Duration = time.Since(start)
	if err != nil {
		var inner *remote.Error
		step := fmt.Sprintf("ensure container %d (%s)", c.VMID, c.Hostname)
		if errors.As(err, &inner) && inner.Host == p.name {
			return res, &remote.Error{Host: p.name, Step: step + ": " + inner.Step, Err: inner.Err}
		}
		return res, &remote.Error{Host: p.name, Step: step, Err: err}
	}
	return res, nil
}

func (p *Proxmox) ensure(ctx context.Context, c remote.Container) (remote.Ensured, error) {
	res := remote.Ensured{VMID: c.VMID}
	if err := c.Validate(); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	id := strconv.Itoa(c.VMID)
	p.mu.Lock()
	cur, exists := p.containers[c.VMID]
	if exists {
		if cur.c.Hostname != c.Hostname {
			p.mu.Unlock()
			return res, fmt.Errorf("%w: container %s is %q, not %q; refusing to touch it", remote.ErrForeignContainer, id, cur.c.Hostname, c.Hostname)
		}
		if !c.Recreate {
			res.Drift = drift(cur.c, c)
			if cur.running {
				p.mu.Unlock()
				return res, nil
			}
			p.startLocked(cur)
			p.mu.Unlock()
			res.Started = true
			return res, p.waitSSH(ctx, c)
		}
		delete(p.containers, c.VMID)
		if n := p.nodes[c.Hostname]; n != nil {
			n.SetUp(false)
		}
		res.Recreated = true
	}
	if f := p.createFail; f != nil {
		p.createFail = nil
		p.mu.Unlock()
		return res, &remote.Error{Host: p.name, Step: "pct create " + id, Err: f}
	}
	name := strings.TrimPrefix(c.Template, p.storage+":vztmpl/")
	if _, ok := p.templates[name]; !ok || name == c.Template {
		p.mu.Unlock()
		return res, &remote.Error{Host: p.name, Step: "pct create " + id,
			Err: &remote.ExitError{Code: 255, Stderr: fmt.Sprintf("volume '%s' does not exist\n", c.Template)}}
	}
	stored := c
	stored.SSH, stored.Recreate, stored.BeforeStart = nil, false, nil
	n := &container{c: stored}
	p.containers[c.VMID] = n
	res.Created = !res.Recreated
	p.mu.Unlock()
	if c.BeforeStart != nil {
		if err := c.BeforeStart(ctx); err != nil {
			return res, err
		}
	}
	p.mu.Lock()
	p.startLocked(n)
	p.mu.Unlock()
	res.Started = true
	// A container made from a template has a host key of its own, which remote.PCT pins.
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		return res, err
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		return res, err
	}
	res.HostKey = ssh.FingerprintSHA256(key)
	return res, p.waitSSH(ctx, c)
}

func (p *Proxmox) startLocked(c *container) {
	c.running = true
	if n := p.nodes[c.c.Hostname]; n != nil {
		n.SetUp(true)
	}
}

// waitSSH polls c.SSH as remote.PCT does.
func (p *Proxmox) waitSSH(ctx context.Context, c remote.Container) error {
	if c.SSH == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.bootTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.SSH.Run(ctx, remote.Cmd{Argv: []string{"true"}, Step: "ssh after boot"})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no SSH within %s: %w", p.bootTimeout, err)
		case <-tick.C:
		}
	}
}

func drift(have, want remote.Container) []string {
	var d []string
	check := func(key string, got, want any) {
		if fmt.Sprint(got) != fmt.Sprint(want) {
			d = append(d, fmt.Sprintf("%s: %v, want %v", key, got, want))
		}
	}
	check("cores", have.Cores, want.Cores)
	check("memory", have.MemoryMiB, want.MemoryMiB)
	return d
}

var _ remote.Lifecycle = (*Proxmox)(nil)

// ownedLocked is container vmid after checking that it is hostname's (nil: none).
func (p *Proxmox) ownedLocked(vmid int, hostname string) (*container, error) {
	c, ok := p.containers[vmid]
	if !ok {
		return nil, nil
	}
	if c.c.Hostname != hostname {
		return c, fmt.Errorf("%w: container %d is %q, not %q; refusing to touch it", remote.ErrForeignContainer, vmid, c.c.Hostname, hostname)
	}
	return c, nil
}

// StopContainer implements remote.Lifecycle like remote.PCT.
func (p *Proxmox) StopContainer(ctx context.Context, vmid int, hostname string) (remote.ContainerState, error) {
	step := fmt.Sprintf("stop container %d (%s)", vmid, hostname)
	if err := ctx.Err(); err != nil {
		return "", &remote.Error{Host: p.name, Step: step, Err: err}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.ownedLocked(vmid, hostname)
	switch {
	case err != nil:
		return remote.ContainerStopped, &remote.Error{Host: p.name, Step: step, Err: err}
	case c == nil:
		return remote.ContainerMissing, nil
	case !c.running:
		return remote.ContainerStopped, nil
	}
	c.running = false
	if n := p.nodes[hostname]; n != nil {
		n.SetUp(false)
	}
	return remote.ContainerRunning, nil
}

// DestroyContainer implements remote.Lifecycle like remote.PCT.
func (p *Proxmox) DestroyContainer(ctx context.Context, vmid int, hostname string) error {
	step := fmt.Sprintf("destroy container %d (%s)", vmid, hostname)
	if err := ctx.Err(); err != nil {
		return &remote.Error{Host: p.name, Step: step, Err: err}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.ownedLocked(vmid, hostname)
	switch {
	case err != nil:
		return &remote.Error{Host: p.name, Step: step, Err: err}
	case c == nil:
		return nil
	case c.running:
		return &remote.Error{Host: p.name, Step: step, Err: fmt.Errorf("container %d is running: stop it first", vmid)}
	}
	delete(p.containers, vmid)
	return nil
}
