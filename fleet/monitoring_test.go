package fleet_test

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.yaml.in/yaml/v3"

	"github.com/cimdeploy/cimdeploy/fleet"
	"github.com/cimdeploy/cimdeploy/gitops/forge"
	"github.com/cimdeploy/cimdeploy/pipeline/queue"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/webhooks"
)

// recorder is a prometheus.Registerer that keeps what is registered with it, so that the names of
// metrics no series has yet (a counter vector before its first increment) are known too.
type recorder struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// names are the metric names the recorded collectors describe. A *prometheus.Desc does not say its
// name, so each description becomes one constant metric (with as many empty label values as it has
// variable labels), which a registry of its own gathers by name.
func (r *recorder) names(t *testing.T) map[string]bool {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range r.collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	var metrics []prometheus.Metric
	for d := range ch {
		var m prometheus.Metric
		var err error
		for labels := range 10 {
			if m, err = prometheus.NewConstMetric(d, prometheus.UntypedValue, 0, make([]string, labels)...); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		metrics = append(metrics, m)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(constCollector(metrics))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

// constCollector collects fixed metrics; it describes none (an unchecked collector).
type constCollector []prometheus.Metric

func (constCollector) Describe(chan<- *prometheus.Desc) {}
func (c constCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c {
		ch <- m
	}
}

// daemonMetricNames are the names in the Name fields of the prometheus options (CounterOpts,
// HistogramOpts, ...) in package daemon's source: its run metrics and the gate histogram are made by
// unexported constructors onto a registry of its own, so they are read from the source instead.
func daemonMetricNames(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join("..", "daemon", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("daemon sources: %v", err)
	}
	var names []string
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := lit.Type.(*ast.SelectorExpr)
			if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
				return true
			}
			for _, e := range lit.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if key, isIdent := kv.Key.(*ast.Ident); !ok || !isIdent || key.Name != "Name" {
					continue
				}
				if s, ok := kv.Value.(*ast.BasicLit); ok && s.Kind == token.STRING {
					name, _ := strconv.Unquote(s.Value)
					names = append(names, name)
				}
			}
			return true
		})
	}
	return names
}

// exported is every metric name cimdeploy serve exports: the real collectors of the fleet, the queue,
// the webhook receiver, the GitHub reporter and the Go runtime and process (as the daemon registers
// them), and the daemon's own.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	ctx := t.Context()
	rec := &recorder{Registry: prometheus.NewRegistry()}
	rec.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if _, err := fleet.NewCollector(fleet.ObserveFunc(func(context.Context) (*fleet.Fleet, error) { return &fleet.Fleet{}, nil }),
		rec, fleet.CollectorOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	q, err := queue.Open(ctx, st.JetStream(), queue.Config{}, nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := webhooks.New(webhooks.Config{Repository: "cim/infra", Secret: []byte("not a real secret")}, q, nil, rec); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("ghp_notarealtoken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gh, err := forge.New(forge.Config{Repository: "cim/infra", TokenFile: tokenFile}, nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		gh.Close(cctx)
	}()
	names := rec.names(t)
	for _, n := range daemonMetricNames(t) {
		names[n] = true
	}
	for _, want := range []string{"cimdeploy_runs_total", "cimdeploy_rollout_gate_seconds", "cimdeploy_queue_depth",
		"cimdeploy_webhook_deliveries_total", "cimdeploy_github_api_calls_total", "cimdeploy_node_drifted", "go_goroutines"} {
		if !names[want] {
			t.Fatalf("the exported names lack %s: %v", want, names)
		}
	}
	return names
}

// The parts of a PromQL expression that are no metric names: strings, label matchers, durations,
// the label lists of by/without/on/ignoring/group_*, numbers.
var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promLabels   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true,
		"without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true}
)

// metricNames are the metric names expr selects.
func metricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, "{}")
	s = promRange.ReplaceAllString(s, "[]")
	s = promLabels.ReplaceAllString(s, "")
	s = regexp.MustCompile(`\b\d+(\.\d+)?(e[+-]?\d+)?\b`).ReplaceAllString(s, "0")
	var out []string
	for _, m := range promIdent.FindAllStringSubmatch(s, -1) {
		if m[1] != "" || promKeywords[strings.ToLower(m[0])] { // a function call, a keyword
			continue
		}
		out = append(out, m[0])
	}
	return out
}

// known reports whether name is exported, or a series of an exported histogram or summary.
func known(names map[string]bool, name string) bool {
	if names[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && names[base] {
			return true
		}
	}
	return false
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		expr string
		want []string
	}{
		{expr: `increase(cimdeploy_runs_total{kind="deploy",result="failed"}[15m]) > 0`, want: []string{"cimdeploy_runs_total"}},
		{expr: `cimdeploy_node_healthy == 0 and on(node) (time() - cimdeploy_node_last_deploy_timestamp_seconds) < 1800`,
			want: []string{"cimdeploy_node_healthy", "cimdeploy_node_last_deploy_timestamp_seconds"}},
		{expr: `histogram_quantile(0.95, sum by (le, stage) (rate(cimdeploy_stage_duration_seconds_bucket[$__rate_interval])))`,
			want: []string{"cimdeploy_stage_duration_seconds_bucket"}},
		{expr: `sum(increase(cimdeploy_github_api_calls_total{code=~"5..|403|429"}[15m])) > 5`, want: []string{"cimdeploy_github_api_calls_total"}},
	} {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%s) = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

// TestAlertRules parses docs/monitoring/alerts.yml as Prometheus reads a rule file and checks every
// rule: named, an expression selecting only metrics cimdeploy exports, a severity, a summary.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("..", "docs", "monitoring", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true) // a misspelt key is an error, as in Prometheus
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	names := exported(t)
	alerts := map[string]bool{}
	for _, g := range file.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: want a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" || alerts[r.Alert] {
				t.Errorf("group %s: alert %q: want a unique name", g.Name, r.Alert)
			}
			alerts[r.Alert] = true
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want a summary and a description", r.Alert)
			}
			checkExpr(t, names, r.Alert, r.Expr)
		}
	}
	for _, want := range []string{"CimdeployDeployFailed", "CimdeployNodeDrifted", "CimdeployNodeUnhealthyAfterDeploy",
		"CimdeployGitHubAPIFailing", "CimdeployGitHubReportsDropped"} {
		if !alerts[want] {
			t.Errorf("alerts.yml lacks %s", want)
		}
	}
}

func checkExpr(t *testing.T, names map[string]bool, where, expr string) {
	t.Helper()
	used := metricNames(expr)
	if len(used) == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
	for _, name := range used {
		if !known(names, name) {
			t.Errorf("%s: %s is no metric cimdeploy exports (in %q)", where, name, expr)
		}
	}
}

// TestGrafanaDashboard parses docs/monitoring/grafana-dashboard.json and checks every panel's
// queries and the node variable's query against the exported metrics.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("..", "docs", "monitoring", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		ID      int      `json:"id"`
		Type    string   `json:"type"`
		Title   string   `json:"title"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var dash struct {
		UID           string  `json:"uid"`
		Title         string  `json:"title"`
		SchemaVersion int     `json:"schemaVersion"`
		Panels        []panel `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion == 0 || len(dash.Panels) == 0 {
		t.Fatalf("dashboard uid %q, title %q, schemaVersion %d, %d panels", dash.UID, dash.Title, dash.SchemaVersion, len(dash.Panels))
	}
	names := exported(t)
	ids := map[int]bool{}
	queries := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] || p.Title == "" {
				t.Errorf("panel %d %q: want a unique id and a title", p.ID, p.Title)
			}
			ids[p.ID] = true
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				queries++
				checkExpr(t, names, "panel "+strconv.Quote(p.Title)+" "+tg.RefID, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	labelValues := regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil || !known(names, m[1]) {
			t.Errorf("variable %s: %q: want label_values of an exported metric", v.Name, v.Definition)
		}
	}
	t.Logf("%d panels, %d queries checked against %d exported metric names", len(ids), queries, len(names))
}
