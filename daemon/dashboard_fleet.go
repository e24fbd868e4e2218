package daemon

import (
	"context"
	"html/template"
	"net/http"
	"time"

	"github.com/cimdeploy/cimdeploy/fleet"
)

// fleetTimeout bounds one observation of the fleet for the page (the metrics' collector keeps its
// own bound and cache).
const fleetTimeout = 15 * time.Second

// fleetPage is what the fleet page shows: every node's running generation, the commit it came from,
// the desired commit, health, drift and recent generations.
type fleetPage struct {
	Nav   []navLink
	Fleet *fleet.Fleet
	Error string
}

// fleetView serves GET /fleet from obs.
type fleetView struct {
	obs    fleet.Observing
	nav    []navLink
	repo   string
	render func(w http.ResponseWriter, t *template.Template, data any)
}

func (v fleetView) register(mux *http.ServeMux) { mux.Handle("GET /fleet", v) }

func (v fleetView) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), fleetTimeout)
	defer cancel()
	page := fleetPage{Nav: v.nav}
	f, err := v.obs.Observe(ctx)
	if err != nil {
		page.Error = "the fleet could not be observed: " + err.Error()
	}
	page.Fleet = f
	v.render(w, fleetTemplate, page)
}

var fleetTemplate = template.Must(template.Must(template.New("fleet").Funcs(funcs).Parse(head)).Parse(`{{template "head"}}
<meta http-equiv="refresh" content="30"><title>cimdeploy fleet</title></head><body>
{{template "nav" .}}
<h1>Fleet</h1>
{{if .Error}}<p class="status failed">{{.Error}}</p>{{end}}
{{with .Fleet}}
<table class="facts">
<tr><th>desired commit</th><td><code>{{short .Desired}}</code>{{if .DesiredRun}} (run <a href="/runs/{{.DesiredRun}}">{{.DesiredRun}}</a>){{end}}</td></tr>
<tr><th>meta leader</th><td>{{.Leader}}</td></tr>
<tr><th>observed</th><td>{{when .Observed}} in {{dur .Duration}}</td></tr>
</table>
<div class="scroll"><table id="fleet"><thead><tr><th>node</th><th>generation</th><th>commit</th><th>health</th><th>drift</th><th>recent generations</th></tr></thead><tbody>
{{range .Nodes}}<tr data-node="{{.Node}}"><td>{{.Node}}{{if .Leader}} (leader){{end}}</td><td>{{if .Generation}}{{.Generation}}{{end}}</td>
<td><code>{{short .Commit}}</code>{{if not .AtDesired}} <span class="status failed">not at desired</span>{{end}}</td>
<td>{{if .Healthy}}<span class="status success">healthy</span>{{else if .Reachable}}<span class="status failed">unhealthy</span>{{else}}<span class="status failed">unreachable</span>{{end}}</td>
<td>{{if .Drifted}}<span class="status failed">switched by hand</span>{{else}}none{{end}}</td>
<td>{{range .Generations}}<div>{{.Number}}{{if .Running}} (running){{end}} <code>{{short .Commit}}</code></div>{{end}}</td></tr>
{{if .Problems}}<tr><td colspan="6"><ul>{{range .Problems}}<li>{{.}}</li>{{end}}</ul></td></tr>{{end}}
{{end}}</tbody></table></div>
{{end}}
</body></html>`))
