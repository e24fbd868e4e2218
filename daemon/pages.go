package daemon

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cimdeploy/cimdeploy/fleet"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// runReader is what the run pages read: the state store.
type runReader interface {
	Run(ctx context.Context, runID string) (store.RunSummary, bool, error)
	Runs(ctx context.Context, limit int) ([]store.RunSummary, error)
	Events(ctx context.Context, runID string) ([]pipeline.Event, error)
}

// runID is what a run id in a URL may be (pipeline.NewRunID makes them; the store keys them). It has
// no '.' and no '/', so a run's log file name made from it never leaves the logs directory.
var runID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// pageTimeout bounds the store reads of one page.
const pageTimeout = 10 * time.Second

// listLimit is how many runs the dashboard lists, newest first.
const listLimit = 100

// Defaults of the live event stream (GET /runs/{id}/events).
const (
	defaultMaxStreams = 64
	defaultHeartbeat  = 15 * time.Second
)

// contentSecurityPolicy is the policy of every dashboard page: scripts, styles and connections
// (EventSource, fetch) from the daemon itself, nothing inline, no frames, no forms.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed static
var staticFiles embed.FS

// navLink is one entry of the dashboard's navigation bar.
type navLink struct {
	Label string
	Href  string
}

// pages is the dashboard: GET / (and GET /runs) lists the runs; GET /runs/{id} shows one run, live
// while it runs (GET /runs/{id}/events, server-sent events from the run's event stream; GET
// /runs/{id}/log, the tail of its command output); GET /api/runs/{id} gives the summary and the
// recorded events as JSON; GET /static/ serves the pages' script and style. Read only: nothing here
// changes a run. The zero values of the optional fields turn their part off or take a default.
type pages struct {
	runs   runReader
	logger *slog.Logger

	// stream opens the ordered consumers of the live event stream (the store's JetStream); nil: no
	// live updates (the event stream answers 503).
	stream eventStream
	// logFile names the command output file of a run (deploy.Deployer.LogFile); nil: no output shown.
	logFile func(runID string) string
	// repo is the GitHub repository OWNER/NAME the commits are linked to; "": not linked.
	repo string
	// nav are links to other pages, shown after "Runs" (the fleet status page adds itself here).
	nav []navLink
	// fleet, when set, is observed for the fleet page (GET /fleet).
	fleet fleet.Observing

	// maxStreams bounds the live event streams open at once (default 64); heartbeat is the interval
	// of their keep-alive comments (default 15s).
	maxStreams int
	heartbeat  time.Duration
	// reg receives the dashboard's metrics; nil: not registered.
	reg prometheus.Registerer

	// streams holds one token per open event stream; register makes it and the metrics.
	streams         chan struct{}
	streamsOpen     prometheus.Gauge
	streamsRejected prometheus.Counter
}

func (p pages) register(mux *http.ServeMux) {
	p.streams = make(chan struct{}, cmp.Or(p.maxStreams, defaultMaxStreams))
	p.heartbeat = cmp.Or(p.heartbeat, defaultHeartbeat)
	p.streamsOpen = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cimdeploy_dashboard_streams", Help: "Live event streams of the dashboard open now.",
	})
	p.streamsRejected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cimdeploy_dashboard_streams_rejected_total", Help: "Live event streams turned away (503) because the limit was reached.",
	})
	if p.reg != nil {
		p.reg.MustRegister(p.streamsOpen, p.streamsRejected)
	}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	mux.Handle("GET /static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /{$}", p.list)
	mux.HandleFunc("GET /runs", p.list)
	mux.HandleFunc("GET /runs/{id}", p.run)
	mux.HandleFunc("GET /runs/{id}/events", p.events)
	mux.HandleFunc("GET /runs/{id}/log", p.log)
	mux.HandleFunc("GET /api/runs/{id}", p.api)
	if p.fleet != nil {
		fleetView{obs: p.fleet, nav: p.nav, render: p.render}.register(mux)
	}
}

// listPage is what the runs list shows.
type listPage struct {
	Nav  []navLink
	Runs []runRow
	// Live is true while a run is queued or running: the page then reloads itself every few seconds.
	Live bool
}

// runRow is one run of the list.
type runRow struct {
	store.RunSummary
	Trigger   string
	CommitURL string
	Elapsed   time.Duration
}

func (p pages) list(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	runs, err := p.runs.Runs(ctx, listLimit)
	if err != nil {
		p.fail(w, "list runs", err)
		return
	}
	page := listPage{Nav: p.nav}
	now := time.Now()
	for _, sum := range runs {
		page.Runs = append(page.Runs, p.row(sum, now))
		page.Live = page.Live || !sum.Status.Final()
	}
	p.render(w, listTemplate, page)
}

// read reads the summary and the recorded events of the run the request names; when it cannot, it
// has answered the request itself (404 for an invalid or unknown id, 503 when the store fails).
func (p pages) read(w http.ResponseWriter, r *http.Request) (string, store.RunSummary, []pipeline.Event, bool) {
	id := r.PathValue("id")
	if !runID.MatchString(id) {
		http.Error(w, "no such run", http.StatusNotFound)
		return "", store.RunSummary{}, nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	sum, ok, err := p.runs.Run(ctx, id)
	if err != nil {
		p.fail(w, "read run", err)
		return "", store.RunSummary{}, nil, false
	}
	if !ok {
		http.Error(w, "no such run", http.StatusNotFound)
		return "", store.RunSummary{}, nil, false
	}
	events, err := p.runs.Events(ctx, id)
	if err != nil {
		p.fail(w, "read events", err)
		return "", store.RunSummary{}, nil, false
	}
	return id, sum, events, true
}

// row is how a run appears in the list and at the top of its page.
func (p pages) row(sum store.RunSummary, now time.Time) runRow {
	row := runRow{RunSummary: sum, Trigger: triggerLabel(sum.Trigger), CommitURL: commitURL(p.repo, sum.Commit), Elapsed: sum.Duration}
	if !sum.Status.Final() && !sum.Start.IsZero() {
		row.Elapsed = now.Sub(sum.Start)
	}
	return row
}

func (p pages) run(w http.ResponseWriter, r *http.Request) {
	id, sum, events, ok := p.read(w, r)
	if !ok {
		return
	}
	page := runPage{Nav: p.nav, Run: p.row(sum, time.Now()), Stages: foldStages(events), Live: p.stream != nil}
	for _, ev := range events {
		page.Seq = max(page.Seq, ev.Sequence)
		if ev.Type == pipeline.RunFinished {
			var res pipeline.Result
			if json.Unmarshal(ev.Data, &res) == nil {
				page.Drift = res.Run.Drift
			}
		}
	}
	if p.logFile != nil {
		page.HasLog = true
		if tail, err := readLogTail(p.logFile(id), logTailBytes); err == nil {
			page.Log = tail
		} else if !isNotExist(err) {
			p.logger.Warn("run page: command output", "run_id", id, "err", err)
		}
	}
	p.render(w, runTemplate, page)
}

func (p pages) api(w http.ResponseWriter, r *http.Request) {
	_, sum, events, ok := p.read(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_ = json.NewEncoder(w).Encode(struct {
		Run    store.RunSummary `json:"run"`
		Events []pipeline.Event `json:"events"`
	}{sum, events})
}

// secureHeaders sets the headers every dashboard answer carries.
func secureHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func (p pages) render(w http.ResponseWriter, t *template.Template, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	secureHeaders(w.Header())
	if err := t.Execute(w, data); err != nil {
		p.logger.Warn("render page", "err", err)
	}
}

func (p pages) fail(w http.ResponseWriter, what string, err error) {
	p.logger.Warn("run page", "what", what, "err", err)
	http.Error(w, what+": the state store did not answer", http.StatusServiceUnavailable)
}

// triggerLabel is how a trigger reads in the dashboard.
func triggerLabel(t pipeline.Trigger) string {
	switch t {
	case pipeline.TriggerPullRequest:
		return "pull request"
	case pipeline.TriggerManual:
		return "CLI"
	}
	return string(t)
}

var (
	githubRepo = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$`)
	commitSHA  = regexp.MustCompile(`^[0-9a-f]{7,64}$`)
)

// commitURL is the commit's page on GitHub, or "" when the repository is not known or either name is
// not one GitHub would have.
func commitURL(repo, commit string) string {
	if !githubRepo.MatchString(repo) || !commitSHA.MatchString(commit) {
		return ""
	}
	return "https://github.com/" + repo + "/commit/" + commit
}
