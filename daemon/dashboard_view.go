package daemon

import (
	"cmp"
	"encoding/json"
	"fmt"
	"html/template"
	"slices"
	"strings"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// runPage is what a run's page shows: its summary, its stages with every node's part, the drift of
// the committed Nix and the tail of the command output. static/dashboard.js folds the events that
// arrive later into the same markup, skipping those up to Seq, which the page already shows.
type runPage struct {
	Nav    []navLink
	Run    runRow
	Stages []*stageView
	Drift  string
	// Seq is the sequence of the last event folded into the page.
	Seq uint64
	// Live is true when the page can follow the run (the event stream is served).
	Live bool
	// HasLog is true when the command output is served; Log is its tail.
	HasLog bool
	Log    string
}

// stageView is one stage of a run page.
type stageView struct {
	Name     string
	Status   pipeline.Status
	Duration time.Duration
	Error    string
	Nodes    []*nodeView
}

// nodeView is one node's part of a stage.
type nodeView struct {
	Node      string
	Status    pipeline.Status
	Duration  time.Duration
	Note      string
	Error     string
	Activity  string
	LastLines []string
}

// foldStages folds a run's events into its stages, in the order they started, each with its nodes
// sorted by name. Events it cannot
// decode are left out: the page shows what it can.
func foldStages(events []pipeline.Event) []*stageView {
	var stages []*stageView
	stage := func(name string) *stageView {
		for _, s := range stages {
			if s.Name == name {
				return s
			}
		}
		s := &stageView{Name: name, Status: pipeline.StatusQueued}
		stages = append(stages, s)
		return s
	}
	node := func(s *stageView, name string) *nodeView {
		for _, n := range s.Nodes {
			if n.Node == name {
				return n
			}
		}
		n := &nodeView{Node: name, Status: pipeline.StatusQueued}
		i, _ := slices.BinarySearchFunc(s.Nodes, name, func(n *nodeView, name string) int { return strings.Compare(n.Node, name) })
		s.Nodes = slices.Insert(s.Nodes, i, n)
		return n
	}
	step := func(s *stageView, r pipeline.StepResult) {
		if r.Node == "" {
			return
		}
		n := node(s, r.Node)
		n.Status, n.Duration, n.Note, n.Error, n.LastLines = r.Status, r.Duration, r.Note, r.Error, r.LastLines
		if r.Status.Final() {
			n.Activity = ""
		}
	}
	finish := func(r pipeline.StageResult) {
		s := stage(r.Name)
		s.Status, s.Duration, s.Error = r.Status, r.Duration, r.Error
		for _, st := range r.Steps {
			step(s, st)
		}
	}
	for _, ev := range events {
		switch ev.Type {
		case pipeline.StageStarted:
			var d pipeline.StageData
			if json.Unmarshal(ev.Data, &d) == nil && d.Stage != "" {
				stage(d.Stage).Status = pipeline.StatusRunning
			}
		case pipeline.StageFinished:
			var d struct {
				pipeline.StageResult
				Stage string `json:"stage"`
			}
			if json.Unmarshal(ev.Data, &d) == nil {
				d.Name = cmp.Or(d.Name, d.Stage)
				if d.Name != "" {
					finish(d.StageResult)
				}
			}
		case pipeline.StepStarted, pipeline.StepFinished:
			var d pipeline.StepData
			if json.Unmarshal(ev.Data, &d) == nil && d.Stage != "" {
				step(stage(d.Stage), d.Step)
			}
		case pipeline.StepProgress:
			var d pipeline.ProgressData
			if json.Unmarshal(ev.Data, &d) == nil && d.Stage != "" && d.Node != "" {
				node(stage(d.Stage), d.Node).Activity = progressLabel(d)
			}
		case pipeline.RunFinished:
			var res pipeline.Result
			if json.Unmarshal(ev.Data, &res) == nil {
				for _, r := range res.Stages {
					finish(r)
				}
			}
		}
	}
	return stages
}

// progressLabel is how a step's progress reads; static/dashboard.js says it the same way.
func progressLabel(d pipeline.ProgressData) string {
	s := ""
	if d.Expected > 0 {
		s = fmt.Sprintf("%d/%d", d.Done, d.Expected)
	}
	if d.Activity != "" {
		if s != "" {
			s += " "
		}
		s += d.Activity
	}
	return s
}

var funcs = template.FuncMap{
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"dur": func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return d.Round(time.Millisecond).String()
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
}

// The pages' templates. Everything they show goes through html/template's escaping; the script
// builds its elements with textContent only.
const head = `{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/dashboard.css"><link rel="icon" href="/static/favicon.svg">{{end}}
{{define "nav"}}<nav><a href="/">Runs</a>{{range .Nav}} <a href="{{.Href}}">{{.Label}}</a>{{end}}</nav>{{end}}
{{define "commit"}}{{if .CommitURL}}<a href="{{.CommitURL}}" rel="noreferrer"><code>{{short .Commit}}</code></a>{{else}}<code>{{short .Commit}}</code>{{end}}{{end}}`

var listTemplate = template.Must(template.Must(template.New("runs").Funcs(funcs).Parse(head)).Parse(`{{template "head"}}
{{if .Live}}<meta http-equiv="refresh" content="5">{{end}}<title>cimdeploy runs</title></head><body>
{{template "nav" .}}
<h1>Runs</h1>
<div class="scroll"><table id="runs"><thead><tr><th>run</th><th>kind</th><th>trigger</th><th>commit</th><th>status</th><th>started</th><th>duration</th></tr></thead><tbody>
{{range .Runs}}<tr data-run="{{.ID}}"><td><a href="/runs/{{.ID}}">{{.ID}}</a></td><td>{{.Kind}}</td><td>{{.Trigger}}</td><td>{{template "commit" .}}</td><td><span class="status {{.Status}}">{{.Status}}</span></td><td>{{when .Created}}</td><td>{{dur .Elapsed}}</td></tr>
{{else}}<tr><td colspan="7">no runs yet</td></tr>{{end}}
</tbody></table></div></body></html>`))

var runTemplate = template.Must(template.Must(template.New("run").Funcs(funcs).Parse(head)).Parse(`{{template "head"}}
<script src="/static/dashboard.js" defer></script>
<title>cimdeploy run {{.Run.ID}}</title></head>
<body id="run" data-run="{{.Run.ID}}" data-seq="{{.Seq}}" data-status="{{.Run.Status}}"{{if .Live}} data-live{{end}}{{if .HasLog}} data-log{{end}}>
{{template "nav" .}}
<h1>Run <code>{{.Run.ID}}</code> <span id="run-status" class="status {{.Run.Status}}">{{.Run.Status}}</span> <span id="live"></span></h1>
<table class="facts">
<tr><th>kind</th><td>{{.Run.Kind}}</td></tr>
<tr><th>trigger</th><td>{{.Run.Trigger}}</td></tr>
<tr><th>ref</th><td>{{.Run.Ref}}</td></tr>
<tr><th>commit</th><td>{{with .Run}}{{template "commit" .}}{{end}}</td></tr>
<tr><th>started</th><td>{{when .Run.Start}}</td></tr>
<tr><th>duration</th><td id="run-duration">{{if .Run.Status.Final}}{{dur .Run.Duration}}{{end}}</td></tr>
</table>
<section id="why"{{if not .Run.Error}} hidden{{end}}><h2>Why it failed</h2><pre id="run-error">{{.Run.Error}}</pre></section>
<h2>Stages</h2>
<ol id="stages">{{range .Stages}}
<li class="stage" data-stage="{{.Name}}"><span class="name">{{.Name}}</span> <span class="status {{.Status}}">{{.Status}}</span> <span class="dur">{{dur .Duration}}</span>
<pre class="err"{{if not .Error}} hidden{{end}}>{{.Error}}</pre>
<ul class="nodes">{{range .Nodes}}<li data-node="{{.Node}}"><span class="name">{{.Node}}</span> <span class="status {{.Status}}">{{.Status}}</span> <span class="dur">{{dur .Duration}}</span> <span class="note">{{.Activity}}{{if .Note}} ({{.Note}}){{end}}</span>
<pre class="err"{{if not .Error}} hidden{{end}}>{{.Error}}{{range .LastLines}}
{{.}}{{end}}</pre></li>{{end}}</ul></li>{{end}}
</ol>
{{if .Drift}}<h2>Drift of the committed Nix</h2><pre>{{.Drift}}</pre>{{end}}
{{if .HasLog}}<h2>Command output</h2><pre id="log" class="log">{{.Log}}</pre>{{end}}
</body></html>`))
