package nixrunner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Progress is a snapshot of a running nix call, handed to the caller's progress func whenever it changes
// and for every build log line. The counts are those of the call's builds (Nix's "builds" activity).
type Progress struct {
	Done     int `json:"done"`     // builds finished
	Expected int `json:"expected"` // builds the call needs, as known so far
	Running  int `json:"running"`  // builds running now
	Failed   int `json:"failed"`   // builds failed
	// Activity is the latest still-running build, substitution or copy as Nix names it,
	// e.g. "building '/nix/store/…-nixos-system-nats-1.drv'"; empty when none runs.
	Activity string `json:"activity,omitempty"`
	// Line is set only when this event is a build log line: the line, without its newline.
	Line string `json:"line,omitempty"`
	// Drv is the derivation whose builder printed Line (empty for other events).
	Drv string `json:"drv,omitempty"`
	// Machine is the remote builder Activity runs on, as Nix names it (ssh-ng://root@builder); empty
	// for a local build or another activity.
	Machine string `json:"machine,omitempty"`
}

// Nix's internal-json activity and result types (src/libutil/logging.hh); stable from Nix 2.4 on.
const (
	actCopyPath   = 100
	actBuilds     = 104
	actBuild      = 105
	actSubstitute = 108

	resBuildLogLine     = 101
	resProgress         = 105
	resPostBuildLogLine = 107
)

// Nix's verbosity levels: lvlError = 0, lvlWarn = 1, lvlNotice = 2, lvlInfo = 3, ...
const lvlNotice = 2

// lastLinesCap is how many lines a failed call keeps in Error.LastLines.
const lastLinesCap = 20

// maxLine caps a line of nix's stderr; a longer one is cut into pieces.
const maxLine = 1 << 20

// buildFailure matches the error messages of Nix 2.8 to 2.3x that mean a build failed, as opposed to an
// evaluation error: "builder for '…' failed with exit code 3" (2.8 to 2.2x), "build of '…' failed"
// (several failures), "Cannot build '…'." (2.2x+), "1 dependencies of derivation '…' failed to build",
// "1 dependencies couldn't be built", "hash mismatch in fixed-output derivation", "… may not be
// deterministic" (--check) and "… failed to produce output path".
var buildFailure = regexp.MustCompile(`builder for '[^']*' failed|build of '[^']*' failed|Cannot build '|` +
	`failed to build|dependencies couldn't be built|hash mismatch in fixed-output derivation|` +
	`may not be deterministic|failed to produce output path`)

var ansi = regexp.MustCompile("\x1b\\[[0-9;?]*[a-zA-Z]")

func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	return ansi.ReplaceAllString(s, "")
}

// entry is one "@nix {…}" line of --log-format internal-json.
type entry struct {
	Action string            `json:"action"` // start, stop, result, msg
	ID     uint64            `json:"id"`
	Level  int               `json:"level"`
	Type   int               `json:"type"`
	Text   string            `json:"text"`
	Msg    string            `json:"msg"`
	File   string            `json:"file"`   // of an error's position, when nix knows it
	Line   int               `json:"line"`   // of an error's position
	Column int               `json:"column"` // of an error's position
	Fields []json.RawMessage `json:"fields"`
}

type activity struct {
	typ     int
	text    string
	drv     string
	machine string // of a build on a remote builder (actBuild's second field)
}

// logParser turns nix's stderr, one line at a time, into Progress events, the last lines for an error,
// and whether a build failed. Lines that are not "@nix " JSON (nix's own stderr outside its logger, or
// a future format) are kept as plain lines. It is not safe for concurrent use; exec feeds it from one
// goroutine.
type logParser struct {
	progress func(Progress) // may be nil

	cur         Progress
	sent        Progress
	sentAny     bool
	acts        map[uint64]activity // every started activity not yet stopped
	shown       []uint64            // started build/substitute/copy activities, oldest first
	last        []string            // ring of the last lines, oldest first
	firstError  string              // the first "error:" line
	buildFailed bool
	drvLog      map[string][]string // the last builder lines of each derivation built, by .drv path
	cause       string              // what went wrong, in one line: see Error.Cause
}

func newLogParser(progress func(Progress)) *logParser {
	return &logParser{progress: progress, acts: map[uint64]activity{}, drvLog: map[string][]string{}}
}

// line handles one line of stderr, without its newline.
func (p *logParser) line(s string) {
	s = strings.TrimRight(s, "\r")
	raw, ok := strings.CutPrefix(s, "@nix ")
	if !ok {
		if strings.TrimSpace(s) != "" {
			p.remember(stripANSI(s))
		}
		return
	}
	var e entry
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		p.remember(stripANSI(s))
		return
	}
	switch e.Action {
	case "start":
		a := activity{typ: e.Type, text: stripANSI(e.Text)}
		if e.Type == actBuild && len(e.Fields) > 0 {
			_ = json.Unmarshal(e.Fields[0], &a.drv)
			if len(e.Fields) > 1 {
				_ = json.Unmarshal(e.Fields[1], &a.machine)
			}
		}
		p.acts[e.ID] = a
		if (a.typ == actBuild || a.typ == actSubstitute || a.typ == actCopyPath) && a.text != "" {
			p.shown = append(p.shown, e.ID)
			p.cur.Activity, p.cur.Machine = a.text, a.machine
			p.emit("", "")
		}
	case "stop":
		delete(p.acts, e.ID)
		for i, id := range p.shown {
			if id == e.ID {
				p.shown = append(p.shown[:i], p.shown[i+1:]...)
				p.cur.Activity, p.cur.Machine = "", ""
				if n := len(p.shown); n > 0 {
					a := p.acts[p.shown[n-1]]
					p.cur.Activity, p.cur.Machine = a.text, a.machine
				}
				p.emit("", "")
				break
			}
		}
	case "result":
		p.result(e)
	case "msg":
		if e.Level > lvlNotice {
			return
		}
		msg := stripANSI(e.Msg)
		if e.Level == 0 && buildFailure.MatchString(msg) {
			p.buildFailed = true
		}
		if e.Level == 0 && p.cause == "" {
			p.cause = p.causeOf(msg, e)
		}
		for l := range strings.SplitSeq(strings.TrimRight(msg, "\n"), "\n") {
			p.remember(strings.TrimRight(l, " "))
		}
	}
}

func (p *logParser) result(e entry) {
	switch e.Type {
	case resBuildLogLine, resPostBuildLogLine:
		var l string
		if len(e.Fields) == 0 || json.Unmarshal(e.Fields[0], &l) != nil {
			return
		}
		l = stripANSI(strings.TrimRight(l, "\r\n"))
		p.remember(l)
		drv := p.acts[e.ID].drv
		if drv != "" && strings.TrimSpace(l) != "" {
			log := p.drvLog[drv]
			if len(log) == causeLines {
				log = append(log[:0], log[1:]...)
			}
			p.drvLog[drv] = append(log, l)
		}
		p.emit(l, drv)
	case resProgress:
		if p.acts[e.ID].typ != actBuilds || len(e.Fields) < 4 {
			return
		}
		var n [4]int
		for i := range n {
			if json.Unmarshal(e.Fields[i], &n[i]) != nil {
				return
			}
		}
		p.cur.Done, p.cur.Expected, p.cur.Running, p.cur.Failed = n[0], n[1], n[2], n[3]
		if n[3] > 0 {
			p.buildFailed = true
		}
		p.emit("", "")
	}
}

// emit hands a snapshot to the progress func: always for a log line, else only when it changed.
func (p *logParser) emit(line, drv string) {
	ev := p.cur
	ev.Line, ev.Drv = line, drv
	if line == "" {
		if p.sentAny && ev == p.sent {
			return
		}
		p.sent, p.sentAny = ev, true
	}
	if p.progress != nil {
		p.progress(ev)
	}
}

func (p *logParser) remember(l string) {
	// Nix 2.8 says the cause on its first line ("error: attribute 'x' missing"); Nix 2.1x and later may
	// open with a bare "error:" and a trace, and say the cause last ("       error: ..."). The first
	// error line with words is the one that says what went wrong in both.
	if t := strings.TrimSpace(l); p.firstError == "" && strings.HasPrefix(t, "error:") && t != "error:" {
		p.firstError = l
	}
	if len(p.last) == lastLinesCap {
		copy(p.last, p.last[1:])
		p.last = p.last[:lastLinesCap-1]
	}
	p.last = append(p.last, l)
}

// causeLines is how many of a failed builder's last lines the cause quotes.
const causeLines = 3

var (
	// failedDrv finds the derivation of a failed build: "builder for '/nix/store/…-x.drv' failed with exit
	// code 1" (Nix 2.8 to 2.2x), "Cannot build '/nix/store/…-x.drv'." (2.2x and later).
	failedDrv = regexp.MustCompile(`(?:builder for|Cannot build) '(/nix/store/[^']+\.drv)'`)
	// quotedLog is a builder's line inside an error message: Nix prints the last lines of a failed build
	// as "       > line" when they were not streamed as results.
	quotedLog = regexp.MustCompile(`^\s*> ?(.*)$`)
	// traceLocation is the first "at /nix/store/…-source/file.nix:12:5" of a trace.
	traceLocation = regexp.MustCompile(`at (/nix/store/[0-9a-z]{32}-[^/\s:]+/[^\s:]+:\d+:\d+)`)
)

// causeOf turns one error message of nix into the one-line cause of the failure: for a failed builder,
// the derivation's name and its last lines; for an evaluation error, the message and the file:line:column
// it points at, relative to the flake's source. Messages that only follow from an earlier failure ("1
// dependencies of derivation … failed to build") give none.
func (p *logParser) causeOf(msg string, e entry) string {
	first, rest, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	first = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(first), "error:"))
	if m := failedDrv.FindStringSubmatch(msg); m != nil {
		lines := p.drvLog[m[1]]
		if len(lines) == 0 {
			for l := range strings.SplitSeq(rest, "\n") {
				if q := quotedLog.FindStringSubmatch(l); q != nil && strings.TrimSpace(q[1]) != "" {
					lines = append(lines, strings.TrimSpace(q[1]))
				}
			}
			if len(lines) > causeLines {
				lines = lines[len(lines)-causeLines:]
			}
		}
		name := drvName(m[1])
		if len(lines) == 0 {
			return name + ": " + first
		}
		return name + " failed: " + strings.Join(lines, " | ")
	}
	trace := rest
	if first == "" {
		// Nix 2.2x and later open with a bare "error:", then the trace from the outermost frame in,
		// and end with "error: <message>": the message is that last line, its place the last "at" before.
		lines := strings.Split(rest, "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if m, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), "error:"); ok && strings.TrimSpace(m) != "" {
				first = strings.TrimSpace(m)
				if all := traceLocation.FindAllString(strings.Join(lines[:i], "\n"), -1); len(all) > 0 {
					trace = all[len(all)-1]
				} else {
					trace = ""
				}
				break
			}
		}
	}
	if buildFailure.MatchString(first) || first == "" {
		return ""
	}
	loc := ""
	if e.File != "" && e.Line > 0 {
		// Nix 2.8 gives the file's path; 2.2x its position as text, with the line and column.
		loc = sourcePath(e.File)
		if pos := fmt.Sprintf(":%d:%d", e.Line, e.Column); !strings.HasSuffix(loc, pos) {
			loc += pos
		}
	} else if m := traceLocation.FindStringSubmatch(trace); m != nil {
		loc = sourcePath(m[1])
	}
	if loc == "" {
		return first
	}
	return loc + ": " + first
}

// sourcePath makes a store path of a flake's source relative: "/nix/store/…-source/a/b.nix" is "a/b.nix".
func sourcePath(path string) string {
	if rest, ok := strings.CutPrefix(path, "/nix/store/"); ok {
		if _, rel, ok := strings.Cut(rest, "/"); ok {
			return rel
		}
	}
	return path
}

// drvName is a derivation's name: "/nix/store/…-nats-conf.drv" is "nats-conf".
func drvName(drv string) string {
	base := strings.TrimSuffix(drv[strings.LastIndexByte(drv, '/')+1:], ".drv")
	if _, name, ok := strings.Cut(base, "-"); ok {
		return name
	}
	return base
}

// lastLines returns a copy of the remembered lines, oldest first. The first "error:" line with a
// message, the one that says what went wrong, leads them even when a long trace pushed it out of the
// window.
func (p *logParser) lastLines() []string {
	out := append([]string(nil), p.last...)
	if p.firstError != "" && !slices.Contains(out, p.firstError) {
		out = append([]string{p.firstError}, out...)
	}
	return out
}

// lineWriter is an io.Writer that calls line for every complete line written to it (without the
// newline) and for pieces of maxLine bytes of an overlong one. flush hands over an unterminated rest.
type lineWriter struct {
	buf  []byte
	line func(string)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			w.buf = append(w.buf, b...)
			for len(w.buf) >= maxLine {
				w.line(string(w.buf[:maxLine]))
				w.buf = append(w.buf[:0], w.buf[maxLine:]...)
			}
			break
		}
		w.buf = append(w.buf, b[:i]...)
		w.line(string(w.buf))
		w.buf = w.buf[:0]
		b = b[i+1:]
	}
	return n, nil
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.line(string(w.buf))
		w.buf = w.buf[:0]
	}
}
