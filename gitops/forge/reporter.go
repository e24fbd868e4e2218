package forge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v60/github"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// ErrClosed is returned by Report and Superseded after Close.
var ErrClosed = errors.New("github reporter closed")

// errSkipped marks a call not sent because it is not needed (wrapped with the reason).
var errSkipped = errors.New("not needed")

// maxRuns bounds the runs whose state the reporter keeps between RunStarted and RunFinished.
const maxRuns = 1024

// maxAnnotations bounds the annotations of one check run; GitHub takes 50 per request.
const (
	maxAnnotations        = 500
	annotationsPerRequest = 50
)

// maxRemembered bounds the last statuses remembered to skip repeats.
const maxRemembered = 4096

// Reporter turns the events of runs into GitHub commit statuses, deployments and (as a GitHub App)
// check runs. It implements pipeline.Reporter and never blocks or fails a run: Report only queues the
// calls, which goroutines of the Reporter send in order per commit, retrying with back-off within
// Config.GiveUpAfter and waiting out GitHub's rate limits. The queue is bounded (Config.QueueSize);
// when it is full the oldest queued call is dropped and logged. It is safe for concurrent use; Close
// flushes it.
type Reporter struct {
	cfg         Config
	owner, repo string
	client      *github.Client
	tokens      tokenSource
	app         bool
	logger      *slog.Logger
	secrets     *secrets
	metrics     *metrics

	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	queues     map[string]*queue
	queued     int
	runs       map[string]*runState
	last       map[statusKey]statusValue
	lastOrder  []statusKey
	superseded map[string]string
}

// queue holds one commit's calls, sent in order by one goroutine at a time.
type queue struct {
	jobs    []job
	running bool
}

// job is one API call.
type job struct {
	endpoint string // metric label
	sha      string
	what     string // for logs
	run      string
	do       func(ctx context.Context) (*github.Response, error)
}

// runState is what the reporter knows of a run between RunStarted and RunFinished. deploymentID and
// checkRunID are written and read only by the commit's queue, one call at a time.
type runState struct {
	run          pipeline.Run
	validateDone bool
	deploymentID int64
	checkRunID   int64
}

type statusKey struct{ sha, context string }
type statusValue struct{ state, description, targetURL string }

// New returns a Reporter for cfg. logger nil: logs are discarded; reg nil: metrics are not registered.
// It reads the credentials now; the first call to GitHub happens on the first event.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Reporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	base, err := url.Parse(cfg.APIURL)
	if err != nil {
		return nil, fmt.Errorf("github api url %q: %w", cfg.APIURL, err)
	}
	owner, repo := cfg.ownerRepo()
	r := &Reporter{cfg: cfg, owner: owner, repo: repo, logger: logger.With("repository", cfg.Repository),
		secrets: &secrets{}, metrics: m, queues: map[string]*queue{}, runs: map[string]*runState{},
		last: map[statusKey]statusValue{}, superseded: map[string]string{}}
	transport := http.DefaultTransport
	newClient := func(rt http.RoundTripper) *github.Client {
		c := github.NewClient(&http.Client{Transport: rt})
		c.BaseURL = base
		c.UserAgent = "cimdeploy"
		return c
	}
	if cfg.TokenFile != "" {
		tok, err := loadToken(cfg.TokenFile)
		if err != nil {
			return nil, err
		}
		r.secrets.add(tok)
		r.tokens = staticToken(tok)
	} else {
		pemBytes, err := readSecretFile(cfg.AppPrivateKeyFile, "app private key")
		if err != nil {
			return nil, err
		}
		key, err := parseRSAKey(pemBytes, cfg.AppPrivateKeyFile)
		if err != nil {
			return nil, err
		}
		app := &appTokens{appID: cfg.AppID, installationID: cfg.InstallationID, key: key, secrets: r.secrets,
			now: time.Now, refreshBefore: 5 * time.Minute, observe: r.observe}
		app.client = newClient(jwtTransport{app: app, base: transport})
		r.tokens, r.app = app, true
	}
	r.client = newClient(authTransport{src: r.tokens, base: transport})
	r.base, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Report queues the GitHub calls ev asks for and returns at once; it fails only for an event it
// cannot decode or after Close. RunStarted: pending statuses (cimdeploy/validate, and for a deploy
// run cimdeploy/deploy), a deployment with an in_progress status, a check run. StageStarted of the
// approval stage: the pending deploy status says the run waits for approval. StageFinished of a
// validation stage (checkout, generate, check, build): the final cimdeploy/validate status when it
// failed or when build passed. RunFinished: the remaining final statuses, the deployment's final status
// and the check run's conclusion with one annotation per located problem.
func (r *Reporter) Report(_ context.Context, ev pipeline.Event) error {
	switch ev.Type {
	case pipeline.RunStarted:
		var d pipeline.RunData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return fmt.Errorf("github reporter: decode %s of run %s: %w", ev.Type, ev.AggregateID, err)
		}
		return r.runStarted(d.Run)
	case pipeline.StageStarted:
		var s pipeline.StageData
		if err := json.Unmarshal(ev.Data, &s); err != nil {
			return fmt.Errorf("github reporter: decode %s of run %s: %w", ev.Type, ev.AggregateID, err)
		}
		return r.stageStarted(ev.AggregateID, s.Stage)
	case pipeline.StageFinished:
		var s pipeline.StageResult
		if err := json.Unmarshal(ev.Data, &s); err != nil {
			return fmt.Errorf("github reporter: decode %s of run %s: %w", ev.Type, ev.AggregateID, err)
		}
		return r.stageFinished(ev.AggregateID, s)
	case pipeline.RunFinished:
		var res pipeline.Result
		if err := json.Unmarshal(ev.Data, &res); err != nil {
			return fmt.Errorf("github reporter: decode %s of run %s: %w", ev.Type, ev.AggregateID, err)
		}
		return r.runFinished(ev.AggregateID, res)
	}
	return nil
}

func (r *Reporter) runStarted(run pipeline.Run) error {
	if run.Commit == "" || run.ID == "" {
		return fmt.Errorf("github reporter: run %q without a commit", run.ID)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if len(r.runs) >= maxRuns {
		for id := range r.runs { // runs that never finished: forget one
			r.logger.Warn("github reporter forgets a run that never finished", "run_id", id)
			delete(r.runs, id)
			break
		}
	}
	st := &runState{run: run}
	r.runs[run.ID] = st
	sha := run.Commit
	r.enqueue(r.statusJob(run.ID, sha, ContextValidate, statePending, "validating "+short(sha)+": events, Nix, flake check, build", r.runURL(run.ID)))
	if run.Kind == pipeline.KindDeploy {
		r.enqueue(r.statusJob(run.ID, sha, ContextDeploy, statePending, "deploying "+short(sha)+" to "+r.cfg.Environment, r.runURL(run.ID)))
		r.enqueue(r.deploymentJob(st))
		r.enqueue(r.deploymentStatusJob(st, "in_progress", "deploying "+short(sha)))
	}
	if r.app {
		r.enqueue(r.checkRunCreateJob(st))
	}
	return nil
}

// ApprovalStage is the stage of a deploy run that waits for an operator (stages.Approve): while it
// runs, the deploy status says so and names the command that lets the run go on.
const ApprovalStage = "approve"

// stageStarted shows a deploy held for approval in its pending cimdeploy/deploy status.
func (r *Reporter) stageStarted(runID, stage string) error {
	if stage != ApprovalStage {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	st := r.runs[runID]
	if st == nil || st.run.Kind != pipeline.KindDeploy {
		return nil
	}
	r.enqueue(r.statusJob(runID, st.run.Commit, ContextDeploy, statePending,
		"built and published; waiting for approval: cimdeploy approve "+runID, r.runURL(runID)))
	return nil
}

func (r *Reporter) stageFinished(runID string, s pipeline.StageResult) error {
	if !isValidationStage(s.Name) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	st := r.runs[runID]
	if st == nil || st.validateDone {
		return nil
	}
	switch {
	case s.Status == pipeline.StatusFailed || s.Status == pipeline.StatusCancelled:
		st.validateDone = true
		state, desc := stateOf(&s), describeFailure(&s, st.run)
		r.enqueue(r.statusJob(runID, st.run.Commit, ContextValidate, state, r.supersededDesc(st.run.Commit, state, desc), r.runURL(runID)))
	case s.Name == validationStages[len(validationStages)-1] && s.Status == pipeline.StatusSuccess:
		st.validateDone = true
		r.enqueue(r.statusJob(runID, st.run.Commit, ContextValidate, stateSuccess, "events, Nix, flake check and build are valid", r.runURL(runID)))
	}
	return nil
}

func (r *Reporter) runFinished(runID string, res pipeline.Result) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	st := r.runs[runID]
	if st == nil { // RunStarted not seen (a reporter added mid-run): report what the result says
		st = &runState{run: res.Run}
		if st.run.ID == "" {
			st.run.ID = runID
		}
	}
	delete(r.runs, runID)
	if st.run.Commit == "" {
		return fmt.Errorf("github reporter: run %s finished without a commit", runID)
	}
	sha, url := st.run.Commit, r.runURL(runID)
	if !st.validateDone {
		st.validateDone = true
		state, desc := validateVerdict(res)
		r.enqueue(r.statusJob(runID, sha, ContextValidate, state, r.supersededDesc(sha, state, desc), url))
	}
	if st.run.Kind == pipeline.KindDeploy {
		state, desc := deployVerdict(res, r.cfg.Environment)
		desc = r.supersededDesc(sha, state, desc)
		r.enqueue(r.statusJob(runID, sha, ContextDeploy, state, desc, url))
		r.enqueue(r.deploymentStatusJob(st, state, desc))
	}
	if r.app {
		for _, j := range r.checkRunCompleteJobs(st, res) {
			r.enqueue(j)
		}
	}
	return nil
}

// supersededDesc names the newer commit in the error status of a run that a newer commit cancelled.
func (r *Reporter) supersededDesc(sha, state, desc string) string {
	if by, ok := r.superseded[sha]; ok && state == stateError {
		return shorten("superseded by "+short(by)+": "+desc, MaxDescription)
	}
	return desc
}

// Superseded gives the commit sha, whose run a newer commit bySHA preempted, a final error status on
// every context still pending there, naming bySHA. Like Report it only queues.
func (r *Reporter) Superseded(_ context.Context, sha, bySHA string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.superseded[sha] = bySHA
	if len(r.superseded) > maxRuns {
		for k := range r.superseded {
			if k != sha {
				delete(r.superseded, k)
				break
			}
		}
	}
	desc := shorten("superseded by "+short(bySHA)+" before it finished", MaxDescription)
	r.enqueue(job{endpoint: "create_status", sha: sha, what: "superseded", do: func(ctx context.Context) (*github.Response, error) {
		var pending []statusKey
		var urls []string
		r.mu.Lock()
		for _, k := range r.lastOrder {
			if v, ok := r.last[k]; ok && k.sha == sha && v.state == statePending {
				pending = append(pending, k)
				urls = append(urls, v.targetURL)
			}
		}
		r.mu.Unlock()
		if len(pending) == 0 {
			return nil, fmt.Errorf("%w: no status pending", errSkipped)
		}
		var resp *github.Response
		for i, k := range pending {
			var err error
			resp, err = r.createStatus(ctx, sha, k.context, stateError, desc, urls[i])
			if err != nil {
				return resp, err
			}
		}
		return resp, nil
	}})
	return nil
}

func (r *Reporter) runURL(runID string) string {
	if r.cfg.PublicURL == "" {
		return ""
	}
	return strings.TrimSuffix(r.cfg.PublicURL, "/") + "/runs/" + url.PathEscape(runID)
}

// statusJob posts a commit status unless it repeats the last one sent for sha and context.
func (r *Reporter) statusJob(runID, sha, sctx, state, desc, target string) job {
	return job{endpoint: "create_status", sha: sha, run: runID, what: sctx + " " + state, do: func(ctx context.Context) (*github.Response, error) {
		return r.createStatus(ctx, sha, sctx, state, desc, target)
	}}
}

func (r *Reporter) createStatus(ctx context.Context, sha, sctx, state, desc, target string) (*github.Response, error) {
	k, v := statusKey{sha, sctx}, statusValue{state, desc, target}
	r.mu.Lock()
	prev, seen := r.last[k]
	r.mu.Unlock()
	if seen && prev == v {
		return nil, fmt.Errorf("%w: identical to the last status sent", errSkipped)
	}
	st := &github.RepoStatus{State: &state, Description: &desc, Context: &sctx}
	if target != "" {
		st.TargetURL = &target
	}
	_, resp, err := r.client.Repositories.CreateStatus(ctx, r.owner, r.repo, sha, st)
	if err == nil {
		r.remember(k, v)
	}
	return resp, err
}

func (r *Reporter) remember(k statusKey, v statusValue) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.last[k]; !ok {
		r.lastOrder = append(r.lastOrder, k)
	}
	r.last[k] = v
	for len(r.lastOrder) > maxRemembered {
		delete(r.last, r.lastOrder[0])
		r.lastOrder = r.lastOrder[1:]
	}
}

// deploymentJob creates the deployment of a deploy run: the commit itself (no auto-merge), no
// required contexts (cimdeploy decides what may deploy, and its own statuses are still pending).
func (r *Reporter) deploymentJob(st *runState) job {
	run := st.run
	return job{endpoint: "create_deployment", sha: run.Commit, run: run.ID, what: "deployment", do: func(ctx context.Context) (*github.Response, error) {
		desc := shorten("cimdeploy run "+run.ID, MaxDescription)
		d, resp, err := r.client.Repositories.CreateDeployment(ctx, r.owner, r.repo, &github.DeploymentRequest{
			Ref:              github.String(run.Commit),
			Task:             github.String("deploy"),
			AutoMerge:        github.Bool(false),
			RequiredContexts: &[]string{},
			Environment:      github.String(r.cfg.Environment),
			Description:      &desc,
		})
		if err == nil {
			st.deploymentID = d.GetID()
		}
		return resp, err
	}}
}

// deploymentStatusJob posts a status of the run's deployment, once it exists.
func (r *Reporter) deploymentStatusJob(st *runState, state, desc string) job {
	run := st.run
	return job{endpoint: "create_deployment_status", sha: run.Commit, run: run.ID, what: "deployment " + state, do: func(ctx context.Context) (*github.Response, error) {
		if st.deploymentID == 0 {
			return nil, fmt.Errorf("%w: the deployment was not created", errSkipped)
		}
		req := &github.DeploymentStatusRequest{State: &state, Description: &desc, Environment: github.String(r.cfg.Environment)}
		if u := r.runURL(run.ID); u != "" {
			req.LogURL = &u
		}
		if r.cfg.EnvironmentURL != "" {
			req.EnvironmentURL = github.String(r.cfg.EnvironmentURL)
		}
		_, resp, err := r.client.Repositories.CreateDeploymentStatus(ctx, r.owner, r.repo, st.deploymentID, req)
		return resp, err
	}}
}

func (r *Reporter) checkRunCreateJob(st *runState) job {
	run := st.run
	return job{endpoint: "create_check_run", sha: run.Commit, run: run.ID, what: "check run", do: func(ctx context.Context) (*github.Response, error) {
		opts := github.CreateCheckRunOptions{Name: CheckRunName, HeadSHA: run.Commit, ExternalID: github.String(run.ID),
			Status: github.String("in_progress"), StartedAt: &github.Timestamp{Time: time.Now().UTC()}}
		if u := r.runURL(run.ID); u != "" {
			opts.DetailsURL = &u
		}
		cr, resp, err := r.client.Checks.CreateCheckRun(ctx, r.owner, r.repo, opts)
		if err == nil {
			st.checkRunID = cr.GetID()
		}
		return resp, err
	}}
}

// checkRunCompleteJobs conclude the run's check run: the first call sets the conclusion with the first
// 50 annotations, each further call appends 50 more (GitHub's limit per request).
func (r *Reporter) checkRunCompleteJobs(st *runState, res pipeline.Result) []job {
	run := st.run
	anns := annotations(res)
	if len(anns) > maxAnnotations {
		anns = anns[:maxAnnotations]
	}
	title := fmt.Sprintf("%s run %s", run.Kind, res.Status)
	summary := shorten(res.Error, 1000)
	if summary == "" {
		summary = "all stages passed"
	}
	var jobs []job
	for i := 0; i == 0 || i < len(anns); i += annotationsPerRequest {
		batch := anns[i:min(i+annotationsPerRequest, len(anns))]
		first := i == 0
		jobs = append(jobs, job{endpoint: "update_check_run", sha: run.Commit, run: run.ID, what: "check run conclusion", do: func(ctx context.Context) (*github.Response, error) {
			if st.checkRunID == 0 {
				return nil, fmt.Errorf("%w: the check run was not created", errSkipped)
			}
			opts := github.UpdateCheckRunOptions{Name: CheckRunName, Output: &github.CheckRunOutput{
				Title: github.String(title), Summary: github.String(summary)}}
			if first {
				opts.Status = github.String("completed")
				opts.Conclusion = github.String(conclusion(res.Status))
				opts.CompletedAt = &github.Timestamp{Time: time.Now().UTC()}
			}
			for _, p := range batch {
				a := &github.CheckRunAnnotation{Path: github.String(p.Path), StartLine: github.Int(p.Line), EndLine: github.Int(p.Line),
					AnnotationLevel: github.String("failure"), Message: github.String(shorten(p.Message, 4000))}
				if p.Column > 0 {
					a.StartColumn, a.EndColumn = github.Int(p.Column), github.Int(p.Column)
				}
				opts.Output.Annotations = append(opts.Output.Annotations, a)
			}
			_, resp, err := r.client.Checks.UpdateCheckRun(ctx, r.owner, r.repo, st.checkRunID, opts)
			return resp, err
		}})
	}
	return jobs
}

// enqueue adds j to its commit's queue and starts the queue's goroutine. r.mu is held.
func (r *Reporter) enqueue(j job) {
	q := r.queues[j.sha]
	if q == nil {
		q = &queue{}
		r.queues[j.sha] = q
	}
	if r.queued >= r.cfg.QueueSize {
		victim := q
		if len(victim.jobs) == 0 {
			for _, o := range r.queues {
				if len(o.jobs) > len(victim.jobs) {
					victim = o
				}
			}
		}
		if len(victim.jobs) > 0 {
			d := victim.jobs[0]
			victim.jobs = victim.jobs[1:]
			r.queued--
			r.metrics.dropped.Inc()
			r.logger.Warn("github report queue full: dropped the oldest call", "call", d.what, "commit", d.sha, "run_id", d.run, "queue_size", r.cfg.QueueSize)
		}
	}
	q.jobs = append(q.jobs, j)
	r.queued++
	if !q.running {
		q.running = true
		r.wg.Add(1)
		go r.drain(j.sha, q)
	}
}

// drain sends a commit's calls in order until its queue is empty.
func (r *Reporter) drain(sha string, q *queue) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		if len(q.jobs) == 0 {
			q.running = false
			if r.queues[sha] == q {
				delete(r.queues, sha)
			}
			r.mu.Unlock()
			return
		}
		j := q.jobs[0]
		q.jobs = q.jobs[1:]
		r.queued--
		r.mu.Unlock()
		r.send(j)
	}
}

// send makes one call, retrying as GitHub asks, within GiveUpAfter.
func (r *Reporter) send(j job) {
	log := r.logger.With("call", j.what, "endpoint", j.endpoint, "commit", j.sha)
	if j.run != "" {
		log = log.With("run_id", j.run)
	}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		if r.base.Err() != nil {
			log.Warn("github call not sent: reporter closed")
			return
		}
		ctx, cancel := context.WithTimeout(r.base, r.cfg.RequestTimeout)
		resp, err := j.do(ctx)
		cancel()
		if errors.Is(err, errSkipped) {
			log.Info("github call skipped", "why", err.Error())
			return
		}
		r.observe(j.endpoint, resp, err)
		if err == nil {
			log.Debug("github call sent", "attempt", attempt)
			return
		}
		wait, retry := r.retryDelay(err, attempt)
		msg := r.secrets.scrub(err.Error())
		switch {
		case !retry:
			log.Error("github call failed; not retried", "attempt", attempt, "err", msg)
			return
		case time.Since(start)+wait > r.cfg.GiveUpAfter:
			log.Error("github call failed; giving up", "attempt", attempt, "after", time.Since(start).Round(time.Millisecond), "next_wait", wait, "err", msg)
			return
		}
		log.Warn("github call failed; retrying", "attempt", attempt, "wait", wait, "err", msg)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.base.Done():
			t.Stop()
			log.Warn("github call not sent: reporter closed")
			return
		}
	}
}

// Close stops taking events and sends what is queued, until ctx ends; then it abandons the rest and
// says how many calls were not sent.
func (r *Reporter) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		r.cancel()
		return nil
	case <-ctx.Done():
		r.mu.Lock()
		n := r.queued
		r.mu.Unlock()
		r.cancel()
		<-done
		return fmt.Errorf("github reporter: %d queued call(s) not sent: %w", n, context.Cause(ctx))
	}
}
