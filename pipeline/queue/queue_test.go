package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sethvargo/go-envconfig"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// patience bounds every wait for an event, so a broken queue fails the test instead of hanging it;
// it is never what a test measures.
const patience = 30 * time.Second

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// openStore opens a store and closes it at the end of the test (unless the test closed it).
func openStore(t *testing.T, cfg store.Config) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), cfg, testLogger(t))
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// fastConfig has the short leases the tests that kill a worker need.
func fastConfig() Config {
	return Config{DeployLease: time.Second, AckWait: time.Second, PausePoll: 20 * time.Millisecond}
}

func openQueue(t *testing.T, js jetstream.JetStream, cfg Config) *Queue {
	t.Helper()
	q, err := Open(t.Context(), js, cfg, testLogger(t), nil)
	if err != nil {
		t.Fatalf("queue.Open: %v", err)
	}
	return q
}

// work runs q.Work until the returned stop is called (or the test ends); stop waits for it.
func work(t *testing.T, q *Queue, h Handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := q.Work(ctx, h); err != nil {
			t.Errorf("Work: %v", err)
		}
	}()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return stop
}

func commit(n int) string { return fmt.Sprintf("%040x", n) }

func deploy(delivery, branch string, n int) Job {
	return Job{Delivery: delivery, Event: "push", Kind: pipeline.KindDeploy, Ref: "refs/heads/" + branch,
		Commit: commit(n), Branch: branch, Repository: "cim/infra"}
}

func validate(delivery string, pr, n int) Job {
	return Job{Delivery: delivery, Event: "pull_request", Kind: pipeline.KindValidate,
		Ref: fmt.Sprintf("refs/pull/%d/head", pr), Commit: commit(n), PullRequest: pr, Repository: "cim/infra"}
}

func enqueue(t *testing.T, q *Queue, j Job) {
	t.Helper()
	dup, err := q.Enqueue(t.Context(), j)
	if err != nil || dup {
		t.Fatalf("Enqueue %s = %v, %v; want stored", j.Delivery, dup, err)
	}
}

// handler is a Handler whose runs block until the test lets them finish (or, with auto, finish at
// once). It records what ran, what was superseded, and how many ran at once per kind.
type handler struct {
	auto       bool
	ignoreCtx  bool // a run that does not stop when its ctx ends: a process that hangs or is killed
	started    chan Job
	finished   chan Job
	superseded chan [2]Job

	mu      sync.Mutex
	gates   map[string]chan struct{}
	runs    []string
	errs    map[string]error
	running map[pipeline.Kind]int
	most    map[pipeline.Kind]int
	calls   atomic.Int64
}

func newHandler(auto bool) *handler {
	return &handler{
		auto:       auto,
		started:    make(chan Job, 100),
		finished:   make(chan Job, 100),
		superseded: make(chan [2]Job, 100),
		gates:      map[string]chan struct{}{},
		errs:       map[string]error{},
		running:    map[pipeline.Kind]int{},
		most:       map[pipeline.Kind]int{},
	}
}

func (h *handler) gate(delivery string) chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	g, ok := h.gates[delivery]
	if !ok {
		g = make(chan struct{})
		h.gates[delivery] = g
	}
	return g
}

// let lets the run of delivery finish.
func (h *handler) let(delivery string) { close(h.gate(delivery)) }

func (h *handler) Run(ctx context.Context, j Job) error {
	h.calls.Add(1)
	h.mu.Lock()
	h.runs = append(h.runs, j.Delivery)
	h.running[j.Kind]++
	h.most[j.Kind] = max(h.most[j.Kind], h.running[j.Kind])
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.running[j.Kind]--
		h.mu.Unlock()
		h.finished <- j
	}()
	h.started <- j
	if h.auto {
		return nil
	}
	done := ctx.Done()
	if h.ignoreCtx {
		done = nil
	}
	select {
	case <-h.gate(j.Delivery):
		return nil
	case <-done:
		h.mu.Lock()
		h.errs[j.Delivery] = context.Cause(ctx)
		h.mu.Unlock()
		return ctx.Err()
	}
}

func (h *handler) Superseded(_ context.Context, old, by Job) { h.superseded <- [2]Job{old, by} }

func (h *handler) ranList() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.runs...)
}

func (h *handler) peak(k pipeline.Kind) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.most[k]
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(patience):
		t.Fatalf("no %s within %v", what, patience)
		var zero T
		return zero
	}
}

func depth(t *testing.T, q *Queue) int {
	t.Helper()
	n, err := q.Depth(t.Context())
	if err != nil {
		t.Fatalf("Depth: %v", err)
	}
	return n
}

func TestEnqueueIsDurable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, store.Config{DataDir: dir})
	q := openQueue(t, s.JetStream(), Config{})
	enqueue(t, q, deploy("d-1", "main", 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A restart: the same data directory, a new server, a new queue.
	s = openStore(t, store.Config{DataDir: dir})
	q = openQueue(t, s.JetStream(), Config{})
	if n := depth(t, q); n != 1 {
		t.Fatalf("Depth after restart = %d, want 1", n)
	}
	h := newHandler(true)
	work(t, q, h)
	if j := recv(t, h.started, "run of the job queued before the restart"); j.Delivery != "d-1" || j.Commit != commit(1) {
		t.Errorf("ran %+v, want delivery d-1 at %s", j, commit(1))
	}
	recv(t, h.finished, "end of the run")
	// Same delivery after the run: still remembered.
	if dup, err := q.Enqueue(t.Context(), deploy("d-1", "main", 1)); err != nil || !dup {
		t.Errorf("Enqueue of a delivery already run = %v, %v; want duplicate", dup, err)
	}
}

func TestDuplicateDeliveryRunsOnce(t *testing.T) {
	t.Parallel()
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	reg := prometheus.NewRegistry()
	q, err := Open(t.Context(), s.JetStream(), Config{}, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	j := deploy("3f1c9a50-1b2c-11f0-8d4e-0242ac120002", "main", 1)
	// The same delivery, four times at once (GitHub's retry racing an operator's redelivery).
	var wg sync.WaitGroup
	var stored atomic.Int32
	for range 4 {
		wg.Go(func() {
			dup, err := q.Enqueue(t.Context(), j)
			if err != nil {
				t.Errorf("Enqueue: %v", err)
			}
			if !dup {
				stored.Add(1)
			}
		})
	}
	wg.Wait()
	if n := stored.Load(); n != 1 {
		t.Errorf("%d of 4 Enqueue calls stored the delivery, want 1", n)
	}
	if n := depth(t, q); n != 1 {
		t.Errorf("Depth = %d, want 1", n)
	}
	if got := testutil.ToFloat64(q.jobs.WithLabelValues("deploy", "duplicate")); got != 3 {
		t.Errorf("cimdeploy_queue_jobs_total{deploy,duplicate} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(q.jobs.WithLabelValues("deploy", "enqueued")); got != 1 {
		t.Errorf("cimdeploy_queue_jobs_total{deploy,enqueued} = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "cimdeploy_queue_depth"); err != nil || n != 1 {
		t.Errorf("cimdeploy_queue_depth gathered %d, %v", n, err)
	}
	// A later job of another branch runs after it: once it ran, the duplicate had its chance.
	enqueue(t, q, deploy("d-sentinel", "staging", 2))
	h := newHandler(true)
	stop := work(t, q, h)
	recv(t, h.finished, "first run")
	recv(t, h.finished, "second run")
	stop()
	if got := h.ranList(); len(got) != 2 || got[0] != j.Delivery || got[1] != "d-sentinel" {
		t.Errorf("runs = %v, want [%s d-sentinel]", got, j.Delivery)
	}
}

func TestLatestWinsAndRunningDeployIsNotInterrupted(t *testing.T) {
	t.Parallel()
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	q := openQueue(t, s.JetStream(), Config{})
	h := newHandler(false)
	work(t, q, h)

	enqueue(t, q, deploy("push-1", "main", 1))
	recv(t, h.started, "start of push-1")
	enqueue(t, q, deploy("push-2", "main", 2))
	enqueue(t, q, deploy("push-3", "main", 3))
	h.let("push-1")
	if j := recv(t, h.finished, "end of push-1"); j.Delivery != "push-1" {
		t.Fatalf("finished %s first, want push-1", j.Delivery)
	}
	sup := recv(t, h.superseded, "push-2 superseded")
	if sup[0].Delivery != "push-2" || sup[1].Delivery != "push-3" || sup[1].Commit != commit(3) {
		t.Errorf("Superseded(%s, %s), want (push-2, push-3)", sup[0].Delivery, sup[1].Delivery)
	}
	if j := recv(t, h.started, "start of push-3"); j.Delivery != "push-3" {
		t.Errorf("started %s, want push-3", j.Delivery)
	}
	h.let("push-3")
	recv(t, h.finished, "end of push-3")
	if got := h.ranList(); strings.Join(got, " ") != "push-1 push-3" {
		t.Errorf("runs = %v, want [push-1 push-3]", got)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.errs["push-1"]; err != nil {
		t.Errorf("push-1 was interrupted: %v", err)
	}
}

func TestOneDeployAtATimeAcrossProcesses(t *testing.T) {
	t.Parallel()
	server := openStore(t, store.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	url := server.ListenURL()
	if url == "" {
		t.Fatal("embedded server has no listen URL")
	}
	// Two processes: each its own connection, queue and Work loop, one shared handler so that it
	// sees every deploy running anywhere.
	h := newHandler(false)
	var queues []*Queue
	for range 2 {
		s := openStore(t, store.Config{URL: url})
		q := openQueue(t, s.JetStream(), Config{})
		queues = append(queues, q)
		work(t, q, h)
	}
	branches := []string{"main", "staging", "prod", "lab"}
	for i, b := range branches {
		enqueue(t, queues[i%2], deploy("d-"+b, b, i+1))
	}
	for range branches {
		j := recv(t, h.started, "a deploy start")
		h.let(j.Delivery)
		recv(t, h.finished, "a deploy end")
	}
	if m := h.peak(pipeline.KindDeploy); m != 1 {
		t.Errorf("%d deploys ran at once, want 1", m)
	}
	if got := h.ranList(); len(got) != len(branches) {
		t.Errorf("runs = %v, want one per branch", got)
	}
}

func TestDeployLockIsExclusiveAndTakenOverWhenItsHolderDies(t *testing.T) {
	t.Parallel()
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	cfg := fastConfig()
	a := openQueue(t, s.JetStream(), cfg)
	b := openQueue(t, s.JetStream(), cfg)

	lostA := make(chan error, 1)
	la, err := a.lockDeploy(t.Context(), func(err error) { lostA <- err })
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *deployLock, 1)
	go func() {
		lb, err := b.lockDeploy(t.Context(), func(error) {})
		if err != nil {
			t.Error(err)
		}
		got <- lb
	}()
	// b waits while a renews: several leases pass (each renewal proves a still holds it).
	for i := range 3 {
		prev := la.revision()
		waitFor(t, func() bool { return la.revision() > prev }, fmt.Sprintf("renewal %d of a's lock", i+1))
		select {
		case <-got:
			t.Fatal("b took the deploy lock while a held and renewed it")
		default:
		}
	}
	la.release()
	lb := recv(t, got, "b taking the released lock")

	// b's process dies: it stops renewing and never releases. a takes the lock over after the lease.
	lb.halt()
	lostA2 := make(chan error, 1)
	la2, err := a.lockDeploy(t.Context(), func(err error) { lostA2 <- err })
	if err != nil {
		t.Fatalf("take over a lapsed lock: %v", err)
	}
	select {
	case err := <-lostA:
		t.Errorf("a's first lock reported lost after release: %v", err)
	default:
	}

	// Another process overwrote the lock (a's lease lapsed during a partition): a learns at its
	// next renewal that it lost it, and its deploy is told why.
	if _, err := b.locks.Put(t.Context(), lockKey, []byte("another process")); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, lostA2, "a noticing its lock taken"); !errors.Is(err, errLockLost) {
		t.Errorf("lost with %v, want errLockLost", err)
	}
	la2.release()
	if e, err := b.locks.Get(t.Context(), lockKey); err != nil || string(e.Value()) != "another process" {
		t.Errorf("the lock after a's release = %v; want the other process's lock untouched", err)
	}
}

// revision is the lock's current revision (each renewal raises it).
func (l *deployLock) revision() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev
}

// halt stops renewing without releasing: what kill -9 does to the holder.
func (l *deployLock) halt() {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
}

// waitFor polls cond until it holds, failing the test after patience.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, patience)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestValidationsRunInParallelUpToTheBound(t *testing.T) {
	t.Parallel()
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	q := openQueue(t, s.JetStream(), Config{MaxValidations: 2})
	h := newHandler(false)
	work(t, q, h)
	for pr := 1; pr <= 5; pr++ {
		enqueue(t, q, validate(fmt.Sprintf("v-%d", pr), pr, pr))
	}
	// Two start without any finishing: they run in parallel.
	first := recv(t, h.started, "first validation")
	second := recv(t, h.started, "second validation")
	if first.Delivery == second.Delivery {
		t.Fatalf("the same validation started twice: %s", first.Delivery)
	}
	// Each end lets exactly one more start.
	open := []Job{first, second}
	for len(open) > 0 {
		h.let(open[0].Delivery)
		recv(t, h.finished, "end of "+open[0].Delivery)
		open = open[1:]
		if len(h.ranList()) < 5 {
			open = append(open, recv(t, h.started, "next validation"))
		}
	}
	if m := h.peak(pipeline.KindValidate); m != 2 {
		t.Errorf("at most %d validations ran at once, want 2", m)
	}
	if n := len(h.ranList()); n != 5 {
		t.Errorf("%d validations ran, want 5", n)
	}
}

func TestKilledWorkerJobRunsAgainElsewhere(t *testing.T) {
	t.Parallel()
	t.Run("connection lost mid-run", func(t *testing.T) {
		t.Parallel()
		server := openStore(t, store.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
		doomed := openStore(t, store.Config{URL: server.ListenURL()})
		qa := openQueue(t, doomed.JetStream(), fastConfig())
		ha := newHandler(false)
		ha.ignoreCtx = true
		work(t, qa, ha)
		t.Cleanup(func() { ha.let("d-1") }) // before the Work loop's stop: cleanups run last first
		enqueue(t, qa, deploy("d-1", "main", 1))
		recv(t, ha.started, "first run of d-1")
		// The process dies: its connection goes, nothing is acknowledged, the lock is not released.
		if err := doomed.Close(); err != nil {
			t.Fatal(err)
		}

		qb := openQueue(t, server.JetStream(), fastConfig())
		hb := newHandler(true)
		work(t, qb, hb)
		if j := recv(t, hb.started, "d-1 delivered again"); j.Delivery != "d-1" {
			t.Errorf("ran %s, want d-1", j.Delivery)
		}
		recv(t, hb.finished, "end of d-1")
	})
	t.Run("work loop stopped mid-run", func(t *testing.T) {
		t.Parallel()
		s := openStore(t, store.Config{DataDir: t.TempDir()})
		qa := openQueue(t, s.JetStream(), fastConfig())
		ha := newHandler(false)
		stopA := work(t, qa, ha)
		enqueue(t, qa, validate("v-1", 7, 1))
		recv(t, ha.started, "first run of v-1")
		stopA() // Run sees its ctx end and returns an error: the job goes back

		qb := openQueue(t, s.JetStream(), fastConfig())
		hb := newHandler(true)
		work(t, qb, hb)
		if j := recv(t, hb.started, "v-1 delivered again"); j.Delivery != "v-1" {
			t.Errorf("ran %s, want v-1", j.Delivery)
		}
		if got := testutil.ToFloat64(qa.jobs.WithLabelValues("validate", "interrupted")); got != 1 {
			t.Errorf("interrupted = %v, want 1", got)
		}
	})
}

func TestJobWhoseRunReturnedDoesNotRunAgain(t *testing.T) {
	t.Parallel()
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	q := openQueue(t, s.JetStream(), Config{})
	h := newHandler(true)
	stop := work(t, q, h)
	j := deploy("d-1", "main", 1)
	enqueue(t, q, j)
	recv(t, h.finished, "the run of d-1")
	stop()

	// The ack of that run was lost: JetStream delivers the message again. Publishing it again under
	// another message id is what the consumer then sees.
	data, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.JetStream().Publish(t.Context(), j.Subject(), data, jetstream.WithMsgID("redelivery")); err != nil {
		t.Fatal(err)
	}
	enqueue(t, q, deploy("d-sentinel", "staging", 2))
	h2 := newHandler(true)
	work(t, q, h2)
	if got := recv(t, h2.started, "the sentinel's run"); got.Delivery != "d-sentinel" {
		t.Errorf("ran %s, want only d-sentinel (d-1 already ran)", got.Delivery)
	}
	if got := testutil.ToFloat64(q.jobs.WithLabelValues("deploy", "skipped")); got != 1 {
		t.Errorf("skipped = %v, want 1", got)
	}
	if n := h.calls.Load() + h2.calls.Load(); n != 2 {
		t.Errorf("Run called %d times, want 2 (d-1 once, the sentinel once)", n)
	}
}

func TestPauseHoldsDeploysNotValidations(t *testing.T) {
	t.Parallel()
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	if err := s.Pause(t.Context(), "alice", "change freeze"); err != nil {
		t.Fatal(err)
	}
	asked := make(chan bool, 1000)
	cfg := fastConfig()
	cfg.Paused = func(ctx context.Context) (bool, error) {
		_, p, err := s.Paused(ctx)
		select {
		case asked <- p:
		default:
		}
		return p, err
	}
	q := openQueue(t, s.JetStream(), cfg)
	h := newHandler(true)
	work(t, q, h)
	enqueue(t, q, deploy("d-1", "main", 1))
	enqueue(t, q, validate("v-1", 3, 2))
	if j := recv(t, h.started, "the validation while paused"); j.Delivery != "v-1" {
		t.Fatalf("started %s while paused, want v-1", j.Delivery)
	}
	recv(t, h.finished, "end of v-1")
	// The deploy loop asked again, saw the pause, and left the deploy queued.
	drain(asked)
	for range 2 {
		if !recv(t, asked, "a pause check") {
			t.Fatal("a pause check said not paused")
		}
	}
	select {
	case j := <-h.started:
		t.Fatalf("%s started while paused", j.Delivery)
	default:
	}
	if n := depth(t, q); n != 1 {
		t.Errorf("Depth while paused = %d, want 1 (the deploy)", n)
	}
	if err := s.Resume(t.Context()); err != nil {
		t.Fatal(err)
	}
	if j := recv(t, h.started, "the deploy after resume"); j.Delivery != "d-1" {
		t.Errorf("started %s, want d-1", j.Delivery)
	}
}

func drain[T any](ch chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func TestEnqueueRefusesInvalidJobs(t *testing.T) {
	t.Parallel()
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	q := openQueue(t, s.JetStream(), Config{})
	good := deploy("d-1", "main", 1)
	tests := []struct {
		name string
		edit func(j *Job)
		want string
	}{
		{name: "short commit", edit: func(j *Job) { j.Commit = "abc123" }, want: `commit "abc123": want 40`},
		{name: "upper-case commit", edit: func(j *Job) { j.Commit = strings.Repeat("AB", 20) }, want: "want 40 lower-case hex"},
		{name: "unknown kind", edit: func(j *Job) { j.Kind = "destroy" }, want: `kind "destroy"`},
		{name: "empty ref", edit: func(j *Job) { j.Ref = " " }, want: "ref: empty"},
		{name: "delivery with a dot", edit: func(j *Job) { j.Delivery = "a.b" }, want: `delivery "a.b"`},
		{name: "deploy of a pull request", edit: func(j *Job) { j.PullRequest = 4 }, want: "never deployed"},
		{name: "deploy without branch", edit: func(j *Job) { j.Branch = "" }, want: "branch: empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := good
			tt.edit(&j)
			_, err := q.Enqueue(t.Context(), j)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Enqueue error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if n := depth(t, q); n != 0 {
		t.Errorf("Depth = %d after refused jobs, want 0", n)
	}
}

func TestKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		job  Job
		want string
	}{
		{job: Job{Kind: pipeline.KindDeploy, Branch: "main"}, want: "main"},
		{job: Job{Kind: pipeline.KindValidate, PullRequest: 42}, want: "pr-42"},
		{job: Job{Kind: pipeline.KindValidate, Branch: "feature/x.y"}, want: "feature_2Fx_2Ey"},
		{job: Job{Kind: pipeline.KindValidate, Branch: "feature_2Fx"}, want: "feature_5F2Fx"},
	}
	for _, tt := range tests {
		if got := tt.job.Key(); got != tt.want {
			t.Errorf("Key of %+v = %q, want %q", tt.job, got, tt.want)
		}
	}
	if got := deploy("d", "release/1.0", 1).Subject(); got != "cimdeploy.jobs.deploy.release_2F1_2E0" {
		t.Errorf("Subject = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	err := Config{MaxValidations: -1, DeployLease: time.Millisecond, AckWait: -time.Second, DedupeWindow: time.Second, Replicas: 9}.Validate()
	for _, want := range []string{"CIMDEPLOY_QUEUE_MAX_VALIDATIONS", "CIMDEPLOY_QUEUE_DEPLOY_LEASE", "CIMDEPLOY_QUEUE_ACK_WAIT", "CIMDEPLOY_QUEUE_DEDUPE_WINDOW", "CIMDEPLOY_NATS_REPLICAS"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error = %v, want one naming %s", err, want)
		}
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	t.Parallel()
	var cfg Config
	err := envconfig.ProcessWith(t.Context(), &envconfig.Config{Target: &cfg, Lookuper: envconfig.MapLookuper(map[string]string{
		"CIMDEPLOY_QUEUE_MAX_VALIDATIONS": "4",
		"CIMDEPLOY_QUEUE_DEPLOY_LEASE":    "2m",
		"CIMDEPLOY_QUEUE_DEDUPE_WINDOW":   "24h",
	})})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{MaxValidations: 4, DeployLease: 2 * time.Minute, AckWait: DefaultAckWait, DedupeWindow: 24 * time.Hour,
		Replicas: 1, MaxJobs: DefaultMaxJobs, PausePoll: DefaultPausePoll}
	if cfg.Paused != nil || cfg.MaxValidations != want.MaxValidations || cfg.DeployLease != want.DeployLease || cfg.AckWait != want.AckWait ||
		cfg.DedupeWindow != want.DedupeWindow || cfg.Replicas != want.Replicas || cfg.MaxJobs != want.MaxJobs || cfg.PausePoll != want.PausePoll {
		t.Errorf("config from environment = %+v, want %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}

func TestFullQueueRefusesNewJobs(t *testing.T) {
	t.Parallel()
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	q := openQueue(t, s.JetStream(), Config{MaxJobs: 2})
	enqueue(t, q, deploy("d-1", "main", 1))
	enqueue(t, q, deploy("d-2", "main", 2))
	_, err := q.Enqueue(t.Context(), deploy("d-3", "main", 3))
	if err == nil || !strings.Contains(err.Error(), "delivery d-3") || !strings.Contains(err.Error(), "CIMDEPLOY_QUEUE_MAX_JOBS=2") {
		t.Errorf("Enqueue into a full queue: %v; want an error naming the delivery and the bound", err)
	}
	// The refused delivery is not remembered as queued: once there is room, the retry is stored.
	h := newHandler(true)
	work(t, q, h)
	recv(t, h.finished, "a run that makes room")
	waitFor(t, func() bool { return depth(t, q) < 2 }, "room in the queue")
	if dup, err := q.Enqueue(t.Context(), deploy("d-3", "main", 3)); err != nil || dup {
		t.Errorf("retry of the refused delivery = %v, %v; want stored", dup, err)
	}
}

func TestJobTakenBeforeARestartRunsAfterIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, store.Config{DataDir: dir})
	q := openQueue(t, s.JetStream(), fastConfig())
	h := newHandler(false)
	h.ignoreCtx = true // the process is killed: its run never ends by itself
	work(t, q, h)
	t.Cleanup(func() { h.let("d-1") })
	enqueue(t, q, deploy("d-1", "main", 1))
	recv(t, h.started, "the run before the restart")
	if err := s.Close(); err != nil { // nothing acknowledged, the lock not released
		t.Fatal(err)
	}

	s = openStore(t, store.Config{DataDir: dir})
	q = openQueue(t, s.JetStream(), fastConfig())
	h2 := newHandler(true)
	work(t, q, h2)
	if j := recv(t, h2.started, "the run after the restart"); j.Delivery != "d-1" {
		t.Errorf("ran %s after the restart, want d-1", j.Delivery)
	}
}

func TestRunLongerThanAckWaitKeepsItsJob(t *testing.T) {
	t.Parallel()
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	cfg := fastConfig()
	q := openQueue(t, s.JetStream(), cfg)
	other := openQueue(t, s.JetStream(), cfg) // a second worker that would take a job let go
	h := newHandler(false)
	work(t, q, h)
	work(t, other, h)
	enqueue(t, q, validate("v-long", 9, 1))
	recv(t, h.started, "start of v-long")
	// Three AckWaits pass with the run going on: kept in progress, the job is not handed out again.
	select {
	case j := <-h.started:
		t.Fatalf("%s delivered again while its run went on", j.Delivery)
	case <-time.After(3 * cfg.AckWait):
	}
	h.let("v-long")
	recv(t, h.finished, "end of v-long")
	// Recorded done and acknowledged after the long run: the queue drains.
	waitFor(t, func() bool { return depth(t, q) == 0 }, "the acknowledged job leaving the stream")
	if n := h.calls.Load(); n != 1 {
		t.Errorf("Run called %d times, want 1", n)
	}
}

// TestLockDeployForACommand: a deploy from the command line takes the same lock as the queue's
// deploys: without waiting it is refused while another holds the lock, naming the holder; waiting,
// it gets the lock once the holder releases it.
func TestLockDeployForACommand(t *testing.T) {
	t.Parallel()
	st := openStore(t, store.Config{DataDir: t.TempDir()})
	serve := openQueue(t, st.JetStream(), Config{})
	cli := openQueue(t, st.JetStream(), Config{})
	release, err := serve.LockDeploy(t.Context(), true, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.LockDeploy(t.Context(), false, func(error) {}); !errors.Is(err, ErrDeployLocked) || !strings.Contains(err.Error(), serve.owner) {
		t.Fatalf("LockDeploy without waiting while held = %v, want ErrDeployLocked naming %q", err, serve.owner)
	}
	got := make(chan error, 1)
	go func() {
		rel, err := cli.LockDeploy(t.Context(), true, func(error) {})
		if err == nil {
			rel()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("LockDeploy waiting returned while the lock is held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("LockDeploy waiting did not get the released lock")
	}
}
