package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/stages"
)

// Progress displays a run's events: a live block of lines on a terminal, plain timestamped lines
// otherwise, or the events themselves as JSON lines. It is a pipeline.Reporter.
type progress struct {
	mu   sync.Mutex
	w    io.Writer
	mode progressMode
	now  func() time.Time

	// live state (terminal mode)
	stages []*liveStage
	drawn  int // lines drawn last time
	frame  int
	stop   chan struct{}
	done   chan struct{}
}

type progressMode int

const (
	progressPlain progressMode = iota
	progressLive
	progressJSON
)

type liveStage struct {
	name   string
	status pipeline.Status
	start  time.Time
	end    time.Time
	nodes  map[string]*liveNode
}

type liveNode struct {
	status         pipeline.Status
	start, end     time.Time
	done, expected int
	activity, note string
}

func newProgress(w io.Writer, mode progressMode) *progress {
	p := &progress{w: w, mode: mode, now: time.Now}
	if mode == progressLive {
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.tick()
	}
	return p
}

// Close stops redrawing and draws the final state.
func (p *progress) Close() {
	if p.mode != progressLive {
		return
	}
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw()
}

func (p *progress) tick() {
	defer close(p.done)
	t := time.NewTicker(120 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.frame++
			p.draw()
			p.mu.Unlock()
		}
	}
}

// Report implements pipeline.Reporter.
func (p *progress) Report(_ context.Context, ev pipeline.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.mode {
	case progressJSON:
		data, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", data)
		return err
	case progressPlain:
		if line := plainLine(ev); line != "" {
			_, err := fmt.Fprintf(p.w, "%s %s\n", ev.Timestamp.Local().Format("15:04:05.000"), line)
			return err
		}
		return nil
	default:
		p.apply(ev)
		return nil
	}
}

func plainLine(ev pipeline.Event) string {
	switch ev.Type {
	case pipeline.RunStarted:
		var d pipeline.RunData
		json.Unmarshal(ev.Data, &d)
		return fmt.Sprintf("run %s started: %s %s at %s (%s, %s)", d.Run.ID, d.Run.Repo, d.Run.Ref, short(d.Run.Commit), d.Run.Kind, d.Run.Trigger)
	case pipeline.StageStarted:
		var d pipeline.StageData
		json.Unmarshal(ev.Data, &d)
		return "stage " + d.Stage + " started"
	case pipeline.StageFinished:
		var d pipeline.StageResult
		json.Unmarshal(ev.Data, &d)
		line := fmt.Sprintf("stage %s %s in %s", d.Name, d.Status, d.Duration.Round(time.Millisecond))
		if d.Error != "" {
			line += ": " + firstLine(d.Error)
		}
		return line
	case pipeline.StepStarted:
		var d pipeline.StepData
		json.Unmarshal(ev.Data, &d)
		return fmt.Sprintf("stage %s node %s started", d.Stage, d.Step.Node)
	case pipeline.StepFinished:
		var d pipeline.StepData
		json.Unmarshal(ev.Data, &d)
		line := fmt.Sprintf("stage %s node %s %s in %s", d.Stage, d.Step.Node, d.Step.Status, d.Step.Duration.Round(time.Millisecond))
		if d.Step.Note != "" {
			line += " (" + d.Step.Note + ")"
		}
		if d.Step.Error != "" {
			line += ": " + firstLine(d.Step.Error)
		}
		return line
	case pipeline.NodeBuilt:
		var d pipeline.StepData
		json.Unmarshal(ev.Data, &d)
		if d.Artifact != nil {
			return fmt.Sprintf("node %s built %s", d.Step.Node, d.Artifact.Toplevel)
		}
	case pipeline.RunFinished:
		var d pipeline.Result
		json.Unmarshal(ev.Data, &d)
		return fmt.Sprintf("run %s %s in %s", d.Run.ID, d.Status, d.Duration.Round(time.Millisecond))
	}
	return "" // progress ticks are for the terminal and JSON
}

func (p *progress) stage(name string) *liveStage {
	for _, s := range p.stages {
		if s.name == name {
			return s
		}
	}
	s := &liveStage{name: name, status: pipeline.StatusQueued, nodes: map[string]*liveNode{}}
	p.stages = append(p.stages, s)
	return s
}

func (p *progress) apply(ev pipeline.Event) {
	switch ev.Type {
	case pipeline.StageStarted:
		var d pipeline.StageData
		json.Unmarshal(ev.Data, &d)
		s := p.stage(d.Stage)
		s.status, s.start = pipeline.StatusRunning, ev.Timestamp
	case pipeline.StageFinished:
		var d pipeline.StageResult
		json.Unmarshal(ev.Data, &d)
		s := p.stage(d.Name)
		s.status, s.end = d.Status, ev.Timestamp
		if s.start.IsZero() {
			s.start = ev.Timestamp
		}
	case pipeline.StepStarted, pipeline.StepFinished:
		var d pipeline.StepData
		json.Unmarshal(ev.Data, &d)
		if d.Step.Node == "" {
			return
		}
		s := p.stage(d.Stage)
		n := s.nodes[d.Step.Node]
		if n == nil {
			n = &liveNode{}
			s.nodes[d.Step.Node] = n
		}
		n.status = d.Step.Status
		if ev.Type == pipeline.StepStarted {
			n.start = ev.Timestamp
		} else {
			n.end, n.note = ev.Timestamp, d.Step.Note
		}
	case pipeline.StepProgress:
		var d pipeline.ProgressData
		json.Unmarshal(ev.Data, &d)
		if n := p.stage(d.Stage).nodes[d.Node]; n != nil {
			n.done, n.expected, n.activity = d.Done, d.Expected, d.Activity
		}
	}
}

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

func (p *progress) symbol(s pipeline.Status) string {
	switch s {
	case pipeline.StatusSuccess:
		return "\x1b[32m✓\x1b[0m"
	case pipeline.StatusFailed:
		return "\x1b[31m✗\x1b[0m"
	case pipeline.StatusCancelled:
		return "\x1b[33m⊘\x1b[0m"
	case pipeline.StatusSkipped:
		return "\x1b[90m-\x1b[0m"
	case pipeline.StatusRunning:
		return "\x1b[36m" + spinner[p.frame%len(spinner)] + "\x1b[0m"
	default:
		return "·"
	}
}

func elapsed(start, end, now time.Time) string {
	if start.IsZero() {
		return ""
	}
	if end.IsZero() {
		end = now
	}
	return end.Sub(start).Round(100 * time.Millisecond).String()
}

// draw repaints the block of lines in place.
func (p *progress) draw() {
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn)
	}
	now := p.now()
	lines := 0
	for _, s := range p.stages {
		fmt.Fprintf(&b, "\x1b[2K%s %-10s %s\n", p.symbol(s.status), s.name, elapsed(s.start, s.end, now))
		lines++
		names := make([]string, 0, len(s.nodes))
		for name := range s.nodes {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			n := s.nodes[name]
			detail := n.note
			if n.status == pipeline.StatusRunning && n.expected > 0 {
				detail = fmt.Sprintf("%s %d/%d %s", bar(n.done, n.expected, 12), n.done, n.expected, trim(n.activity, 50))
			}
			fmt.Fprintf(&b, "\x1b[2K    %s %-12s %8s  %s\n", p.symbol(n.status), name, elapsed(n.start, n.end, now), detail)
			lines++
		}
	}
	p.drawn = lines
	io.WriteString(p.w, b.String())
}

func bar(done, expected, width int) string {
	if expected <= 0 {
		return ""
	}
	filled := min(width, done*width/expected)
	return "[" + strings.Repeat("█", filled) + strings.Repeat(" ", width-filled) + "]"
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n+1:]
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// printSummary writes the result as a table: a line per stage and per node.
func printSummary(w io.Writer, res *pipeline.Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tNODE\tSTATUS\tDURATION\tEXIT\tDETAIL")
	for _, s := range res.Stages {
		fmt.Fprintf(tw, "%s\t\t%s\t%s\t\t%s\n", s.Name, s.Status, s.Duration.Round(time.Millisecond), trim(firstLine(s.Error), 70))
		for _, st := range s.Steps {
			detail := trim(st.Note, 70)
			if st.Error != "" {
				// The end of the first line is the cause (a builder's own message, an evaluation error's
				// file:line): keep it whole where it fits.
				detail = trim(firstLine(st.Error), 100)
			}
			exit := ""
			if st.ExitCode != 0 {
				exit = fmt.Sprint(st.ExitCode)
			}
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s\t%s\n", st.Node, st.Status, st.Duration.Round(time.Millisecond), exit, detail)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nrun %s %s in %s (%s at %s)\n", res.Run.ID, res.Status, res.Duration.Round(time.Millisecond), res.Run.Ref, short(res.Run.Commit))
	for _, s := range res.Stages {
		for _, st := range s.Steps {
			if st.Status == pipeline.StatusFailed && len(st.LastLines) > 0 {
				fmt.Fprintf(w, "\n%s %s, last lines:\n  %s\n", s.Name, st.Node, strings.Join(st.LastLines, "\n  "))
			}
		}
	}
	printWhy(w, res)
}

// Bounds of what the summary shows of a failure: the problems of the events, the lines of the drift
// diff, the further lines of an error.
const (
	shownProblems  = 20
	shownDiffLines = 60
	shownLines     = 10
)

// printWhy says why a failed run failed, so nobody has to open the log: the problems of the events
// (the first shownProblems, then how many more), the drift diff (its first lines, then how many
// more), or the lines of the failing stage's error after its first.
func printWhy(w io.Writer, res *pipeline.Result) {
	failure := res.Failure()
	var problems events.Problems
	switch {
	case errors.As(failure, &problems):
		fmt.Fprintf(w, "\n%d problem(s) in the events:\n", len(problems))
		for _, p := range problems[:min(len(problems), shownProblems)] {
			fmt.Fprintf(w, "  %s\n", pipeline.Truncate(p.String(), 300))
		}
		if more := len(problems) - shownProblems; more > 0 {
			fmt.Fprintf(w, "  and %d more\n", more)
		}
	case errors.Is(failure, stages.ErrDrift) && res.Run.Drift != "":
		fmt.Fprintf(w, "\nthe committed Nix differs from the projection of the events (run `cimdeploy generate` and commit the result):\n")
		printLines(w, res.Run.Drift, shownDiffLines, "... %d more lines\n")
	default:
		for _, s := range res.Stages {
			if s.Status != pipeline.StatusFailed {
				continue
			}
			if _, rest, ok := strings.Cut(strings.TrimRight(s.Error, "\n"), "\n"); ok {
				fmt.Fprintf(w, "\n%s: %s\n", s.Name, firstLine(s.Error))
				printLines(w, rest, shownLines, "  and %d more lines\n")
			}
			break
		}
	}
}

// printLines writes the first n lines of text, indented, then more (a format with the count) when
// there are others.
func printLines(w io.Writer, text string, n int, more string) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for _, l := range lines[:min(len(lines), n)] {
		fmt.Fprintf(w, "  %s\n", pipeline.Truncate(l, 300))
	}
	if len(lines) > n {
		fmt.Fprintf(w, more, len(lines)-n)
	}
}
