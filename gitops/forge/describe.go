package forge

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// Commit status contexts.
const (
	ContextValidate = "cimdeploy/validate"
	ContextDeploy   = "cimdeploy/deploy"
)

// CheckRunName is the name of the check run a GitHub App reports.
const CheckRunName = "cimdeploy"

// Commit status states (the enum of repos/create-commit-status).
const (
	statePending = "pending"
	stateSuccess = "success"
	stateFailure = "failure"
	stateError   = "error"
)

// MaxDescription is the longest commit and deployment status description GitHub accepts, in
// characters.
const MaxDescription = 140

// validationStages are the stages whose success makes a commit valid; the stages after them deploy.
var validationStages = []string{"checkout", "generate", "check", "build"}

// driftPrefix starts the error of a generate stage that found the committed Nix differing from the
// projection (stages.ErrDrift).
const driftPrefix = "the committed Nix differs"

// shorten cuts s to at most n characters, ending a cut string with an ellipsis, and folds it onto one
// line.
func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// problemLine matches one located problem of the events, "file:line[:col]: rest", as
// events.Problem.String writes it.
var problemLine = regexp.MustCompile(`^\s*([^\s:][^:]*):(\d+)(?::(\d+))?: (.+)$`)

// Problem is an error located in a file of the repository.
type Problem struct {
	Path    string
	Line    int
	Column  int
	Message string
}

// problems reads the located problems out of a stage's error message: every line of the form
// "file:line[:col]: message".
func problems(msg string) []Problem {
	var out []Problem
	for _, l := range strings.Split(msg, "\n") {
		m := problemLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		line, err := strconv.Atoi(m[2])
		if err != nil || line < 1 {
			continue
		}
		col, _ := strconv.Atoi(m[3])
		out = append(out, Problem{Path: m[1], Line: line, Column: col, Message: m[4]})
	}
	return out
}

// driftFiles lists the files a unified diff changes ("+++ b/<file>").
func driftFiles(diff string) []string {
	var files []string
	for _, l := range strings.Split(diff, "\n") {
		if f, ok := strings.CutPrefix(l, "+++ b/"); ok && !slices.Contains(files, f) {
			files = append(files, f)
		}
	}
	return files
}

// firstFailure returns the first stage that failed or was cancelled, or nil.
func firstFailure(stages []pipeline.StageResult) *pipeline.StageResult {
	for i := range stages {
		if stages[i].Status == pipeline.StatusFailed || stages[i].Status == pipeline.StatusCancelled {
			return &stages[i]
		}
	}
	return nil
}

func isValidationStage(name string) bool { return slices.Contains(validationStages, name) }

// failedNodes are the nodes whose step failed in the stage ("flake", the check stage's one step, is no
// node).
func failedNodes(s *pipeline.StageResult) []string {
	var nodes []string
	for _, st := range s.Steps {
		if st.Status == pipeline.StatusFailed && st.Node != "" && st.Node != "flake" {
			nodes = append(nodes, st.Node)
		}
	}
	return nodes
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// stateOf is the status state for a failed or cancelled stage: error for a cancelled run or a broken
// stage (a panic), failure for a result the commit caused.
func stateOf(s *pipeline.StageResult) string {
	if s.Status == pipeline.StatusCancelled || strings.Contains(s.Error, "panic: ") {
		return stateError
	}
	return stateFailure
}

// describeFailure says in at most MaxDescription characters where a stage failed: the stage, the
// nodes, the first located problems of the events or the files the committed Nix drifts in.
func describeFailure(s *pipeline.StageResult, run pipeline.Run) string {
	if s.Status == pipeline.StatusCancelled {
		return shorten(fmt.Sprintf("%s cancelled: %s", s.Name, firstLine(s.Error)), MaxDescription)
	}
	if strings.HasPrefix(s.Error, driftPrefix) {
		files := driftFiles(run.Drift)
		if len(files) == 0 {
			files = driftFiles(s.Error)
		}
		return shorten("committed Nix drifts: "+strings.Join(files, ", "), MaxDescription)
	}
	if ps := problems(s.Error); s.Name == "generate" && len(ps) > 0 {
		lines := make([]string, len(ps))
		for i, p := range ps {
			lines[i] = fmt.Sprintf("%s:%d: %s", p.Path, p.Line, p.Message)
		}
		return shorten(fmt.Sprintf("%s: %s", s.Name, strings.Join(lines, "; ")), MaxDescription)
	}
	if nodes := failedNodes(s); len(nodes) > 0 {
		msg := ""
		for _, st := range s.Steps {
			if st.Node == nodes[0] {
				msg = firstLine(st.Error)
				// The step error repeats "stage node: "; say it once.
				msg = strings.TrimPrefix(msg, s.Name+" "+st.Node+": ")
			}
		}
		return shorten(fmt.Sprintf("%s failed on %s: %s", s.Name, strings.Join(nodes, ", "), msg), MaxDescription)
	}
	return shorten(fmt.Sprintf("%s failed: %s", s.Name, firstLine(s.Error)), MaxDescription)
}

// validateVerdict is the cimdeploy/validate state and description of a finished run.
func validateVerdict(res pipeline.Result) (state, desc string) {
	f := firstFailure(res.Stages)
	switch {
	case f != nil && isValidationStage(f.Name):
		return stateOf(f), describeFailure(f, res.Run)
	case res.Status == pipeline.StatusCancelled && !validated(res.Stages):
		return stateError, shorten("run cancelled before validation finished: "+firstLine(res.Error), MaxDescription)
	case validated(res.Stages) || res.Status == pipeline.StatusSuccess:
		return stateSuccess, "events, Nix, flake check and build are valid"
	default:
		return stateFailure, shorten(firstLine(res.Error), MaxDescription)
	}
}

// validated reports whether every validation stage the run has ran and succeeded.
func validated(stages []pipeline.StageResult) bool {
	seen := false
	for _, s := range stages {
		if !isValidationStage(s.Name) {
			continue
		}
		seen = true
		if s.Status != pipeline.StatusSuccess {
			return false
		}
	}
	return seen
}

// deployVerdict is the cimdeploy/deploy state and description of a finished deploy run.
func deployVerdict(res pipeline.Result, environment string) (state, desc string) {
	switch f := firstFailure(res.Stages); {
	case res.Status == pipeline.StatusSuccess:
		return stateSuccess, shorten(fmt.Sprintf("deployed %d node(s) to %s", len(res.Run.Nodes), environment), MaxDescription)
	case f != nil:
		return stateOf(f), describeFailure(f, res.Run)
	case res.Status == pipeline.StatusCancelled:
		return stateError, shorten("cancelled: "+firstLine(res.Error), MaxDescription)
	default:
		return stateFailure, shorten(firstLine(res.Error), MaxDescription)
	}
}

// annotations are the located problems of the events, at their files in the repository, for a check
// run.
func annotations(res pipeline.Result) []Problem {
	var out []Problem
	for _, s := range res.Stages {
		if s.Status != pipeline.StatusFailed || s.Name != "generate" {
			continue
		}
		for _, p := range problems(s.Error) {
			if filepath.IsLocal(p.Path) {
				out = append(out, p)
			}
		}
	}
	return out
}

// conclusion maps a run's status to a check run conclusion (enum of checks/update).
func conclusion(s pipeline.Status) string {
	switch s {
	case pipeline.StatusSuccess:
		return "success"
	case pipeline.StatusCancelled:
		return "cancelled"
	default:
		return "failure"
	}
}
