package daemon

import (
	"context"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// runReader is what the run pages read: the state store.
type runReader interface {
	Run(ctx context.Context, runID string) (store.RunSummary, bool, error)
	Runs(ctx context.Context, limit int) ([]store.RunSummary, error)
	Events(ctx context.Context, runID string) ([]pipeline.Event, error)
}

// runID is what a run id in a URL may be (pipeline.NewRunID makes them; the store keys them).
var runID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// pageTimeout bounds the store reads of one page.
const pageTimeout = 10 * time.Second

// runPage is what a run's page shows: its summary, every node's part of each stage, and how it ended
// (the error, the first problems of the events, the drift of the committed Nix).
type runPage struct {
	Run    store.RunSummary
	Steps  map[string][]pipeline.StepResult // stage -> its steps, in the order they finished
	Result *pipeline.Result
}

// pages serves the run pages GitHub statuses link to (target_url): GET /runs and GET /runs/{id},
// HTML for people; GET /api/runs/{id}, the summary and the recorded events as JSON.
type pages struct {
	runs   runReader
	logger *slog.Logger
}

func (p pages) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /runs", p.list)
	mux.HandleFunc("GET /runs/{id}", p.run)
	mux.HandleFunc("GET /api/runs/{id}", p.api)
}

func (p pages) list(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	runs, err := p.runs.Runs(ctx, 100)
	if err != nil {
		p.fail(w, "list runs", err)
		return
	}
	p.render(w, listTemplate, runs)
}

func (p pages) run(w http.ResponseWriter, r *http.Request) {
	page, ok := p.load(w, r)
	if !ok {
		return
	}
	p.render(w, runTemplate, page)
}

func (p pages) api(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !runID.MatchString(id) {
		http.Error(w, "no such run", http.StatusNotFound)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	sum, ok, err := p.runs.Run(ctx, id)
	if err != nil {
		p.fail(w, "read run", err)
		return
	}
	if !ok {
		http.Error(w, "no such run", http.StatusNotFound)
		return
	}
	events, err := p.runs.Events(ctx, id)
	if err != nil {
		p.fail(w, "read events", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Run    store.RunSummary `json:"run"`
		Events []pipeline.Event `json:"events"`
	}{sum, events})
}

// load reads a run's summary and events; it answers the request itself when it cannot.
func (p pages) load(w http.ResponseWriter, r *http.Request) (runPage, bool) {
	id := r.PathValue("id")
	if !runID.MatchString(id) {
		http.Error(w, "no such run", http.StatusNotFound)
		return runPage{}, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	sum, ok, err := p.runs.Run(ctx, id)
	if err != nil {
		p.fail(w, "read run", err)
		return runPage{}, false
	}
	if !ok {
		http.Error(w, "no such run", http.StatusNotFound)
		return runPage{}, false
	}
	events, err := p.runs.Events(ctx, id)
	if err != nil {
		p.fail(w, "read events", err)
		return runPage{}, false
	}
	page := runPage{Run: sum, Steps: map[string][]pipeline.StepResult{}}
	for _, ev := range events {
		switch ev.Type {
		case pipeline.StepFinished:
			var d pipeline.StepData
			if json.Unmarshal(ev.Data, &d) == nil {
				page.Steps[d.Stage] = append(page.Steps[d.Stage], d.Step)
			}
		case pipeline.RunFinished:
			var res pipeline.Result
			if json.Unmarshal(ev.Data, &res) == nil {
				page.Result = &res
			}
		}
	}
	return page, true
}

func (p pages) render(w http.ResponseWriter, t *template.Template, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	if err := t.Execute(w, data); err != nil {
		p.logger.Warn("render page", "err", err)
	}
}

func (p pages) fail(w http.ResponseWriter, what string, err error) {
	p.logger.Warn("run page", "what", what, "err", err)
	http.Error(w, what+": the state store did not answer", http.StatusServiceUnavailable)
}

var funcs = template.FuncMap{
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"dur": func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
}

const style = `<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}.success{color:#1a7f37}.failed,.cancelled{color:#cf222e}pre{background:#f6f8fa;padding:1em;overflow:auto;max-height:40em}</style>`

var listTemplate = template.Must(template.New("runs").Funcs(funcs).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>cimdeploy runs</title>` + style + `</head><body>
<h1>Runs</h1>
<table><tr><th>run</th><th>kind</th><th>trigger</th><th>ref</th><th>commit</th><th>status</th><th>created</th><th>duration</th></tr>
{{range .}}<tr><td><a href="/runs/{{.ID}}">{{.ID}}</a></td><td>{{.Kind}}</td><td>{{.Trigger}}</td><td>{{.Ref}}</td><td>{{short .Commit}}</td><td class="{{.Status}}">{{.Status}}</td><td>{{when .Created}}</td><td>{{dur .Duration}}</td></tr>
{{else}}<tr><td colspan="8">no runs yet</td></tr>{{end}}
</table></body></html>`))

var runTemplate = template.Must(template.New("run").Funcs(funcs).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>cimdeploy run {{.Run.ID}}</title>` + style + `</head><body>
<p><a href="/runs">all runs</a></p>
<h1>Run {{.Run.ID}}: <span class="{{.Run.Status}}">{{.Run.Status}}</span></h1>
<table>
<tr><th>kind</th><td>{{.Run.Kind}}</td></tr>
<tr><th>trigger</th><td>{{.Run.Trigger}}</td></tr>
<tr><th>repository</th><td>{{.Run.Repo}}</td></tr>
<tr><th>ref</th><td>{{.Run.Ref}}</td></tr>
<tr><th>commit</th><td><code>{{.Run.Commit}}</code></td></tr>
<tr><th>started</th><td>{{when .Run.Start}}</td></tr>
<tr><th>duration</th><td>{{dur .Run.Duration}}</td></tr>
</table>
{{if .Run.Error}}<h2>Why it failed</h2><pre>{{.Run.Error}}</pre>{{end}}
<h2>Stages</h2>
<table><tr><th>stage</th><th>status</th><th>duration</th><th>nodes</th></tr>
{{range .Run.Stages}}<tr><td>{{.Name}}</td><td class="{{.Status}}">{{.Status}}</td><td>{{dur .Duration}}</td><td>{{range index $.Steps .Name}}{{if .Node}}<div>{{.Node}}: <span class="{{.Status}}">{{.Status}}</span> {{dur .Duration}}{{if .Note}} ({{.Note}}){{end}}{{if .Error}}: {{.Error}}{{end}}</div>{{end}}{{end}}</td></tr>
{{end}}</table>
{{with .Result}}{{if .Run.Drift}}<h2>Drift of the committed Nix</h2><pre>{{.Run.Drift}}</pre>{{end}}{{end}}
</body></html>`))
