// Package events reads the domain events of an infrastructure repository: one event per JSON file or
// many per NDJSON file, in the envelope the CIM event stores write. Load checks the envelopes and the
// order of the log; what the events mean is gitops/topology's business.
package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The event types cimdeploy understands.
const (
	DomainCreated          = "DomainCreated"
	NetworkTopologyUpdated = "NetworkTopologyUpdated"
	NodeAdded              = "NodeAdded"
	NodeUpdated            = "NodeUpdated"
	NodeRemoved            = "NodeRemoved"
	ServiceAdded           = "ServiceAdded"
	ServiceConfigured      = "ServiceConfigured"
)

// Types lists the known event types.
var Types = []string{DomainCreated, NetworkTopologyUpdated, NodeAdded, NodeUpdated, NodeRemoved, ServiceAdded, ServiceConfigured}

// Event is one domain event in the CIM envelope.
type Event struct {
	EventID       string          `json:"event_id"`
	AggregateID   string          `json:"aggregate_id"`
	Sequence      uint64          `json:"sequence"`
	Timestamp     time.Time       `json:"timestamp"`
	CorrelationID string          `json:"correlation_id"`
	CausationID   string          `json:"causation_id"`
	Type          string          `json:"event_type"`
	Data          json.RawMessage `json:"data"`

	// Source is where the event was read from.
	Source Source `json:"-"`
}

// Source locates an event: its file (relative to the events directory) and line.
type Source struct {
	File string
	Line int
}

func (s Source) String() string {
	switch {
	case s.File == "":
		return "events"
	case s.Line > 0:
		return fmt.Sprintf("%s:%d", s.File, s.Line)
	default:
		return s.File
	}
}

// Problem is one thing wrong with the events, located as precisely as is known.
type Problem struct {
	Source   Source
	Column   int    // for syntax errors
	Sequence uint64 // 0 when unknown
	EventID  string
	Field    string // JSON path of the field, such as data.nodes[0].name
	Message  string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Source.String())
	if p.Column > 0 {
		fmt.Fprintf(&b, ":%d", p.Column)
	}
	b.WriteString(": ")
	if p.Sequence > 0 || p.EventID != "" {
		b.WriteString("event")
		if p.Sequence > 0 {
			fmt.Fprintf(&b, " %d", p.Sequence)
		}
		if p.EventID != "" {
			fmt.Fprintf(&b, " (%s)", p.EventID)
		}
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every problem found in one pass; it is an error when not empty.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return fmt.Sprintf("%d problem(s) in the events:\n  %s", len(ps), strings.Join(lines, "\n  "))
}

// Err returns ps as an error, or nil when there are none.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// Problem builds a problem located at e.
func (e *Event) Problem(field, format string, args ...any) Problem {
	return Problem{Source: e.Source, Sequence: e.Sequence, EventID: e.EventID, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Extensions of the files Load reads; others (README.md, ...) are ignored.
const (
	extJSON   = ".json"
	extNDJSON = ".ndjson"
	extJSONL  = ".jsonl"
)

// Load reads every event file under dir (recursively, in lexical order), checks each envelope and the
// log as a whole, and returns the events sorted by sequence with every problem found. Events with a
// broken envelope are left out; the rest are returned even when there are problems, so callers can
// report more in the same run.
func Load(dir string) ([]Event, Problems) {
	evs, problems := LoadFS(os.DirFS(dir), ".")
	for i := range evs {
		evs[i].Source.File = filepath.Join(dir, evs[i].Source.File)
	}
	for i := range problems {
		problems[i].Source.File = filepath.Join(dir, problems[i].Source.File)
	}
	return evs, problems
}

// LoadFS is Load on a file system.
func LoadFS(fsys fs.FS, root string) ([]Event, Problems) {
	var files []string
	var problems Problems
	err := fs.WalkDir(fsys, root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch filepath.Ext(path) {
		case extJSON, extNDJSON, extJSONL:
			if !d.IsDir() {
				files = append(files, path)
			}
		}
		return nil
	})
	if err != nil {
		return nil, Problems{{Source: Source{File: root}, Message: err.Error()}}
	}
	if len(files) == 0 {
		return nil, Problems{{Source: Source{File: root}, Message: "no event files (*.json, *.ndjson)"}}
	}
	sort.Strings(files)
	var all []Event
	for _, name := range files {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			problems = append(problems, Problem{Source: Source{File: name}, Message: err.Error()})
			continue
		}
		evs, ps := Parse(name, data)
		all = append(all, evs...)
		problems = append(problems, ps...)
	}
	sorted, ps := Order(all)
	// Events of unknown types keep their place in the order checks, then leave: their problem is reported.
	kept := sorted[:0]
	for _, ev := range sorted {
		if known(ev.Type) {
			kept = append(kept, ev)
		}
	}
	return kept, append(problems, ps...)
}

// Parse reads the events of one file: a single JSON object for .json, one object per line otherwise.
func Parse(name string, data []byte) ([]Event, Problems) {
	if filepath.Ext(name) == extJSON {
		ev, p, keep := parseOne(Source{File: name, Line: 1}, data, 0)
		var evs []Event
		var problems Problems
		if keep {
			evs = append(evs, ev)
		}
		if p != nil {
			problems = append(problems, *p)
		}
		return evs, problems
	}
	var evs []Event
	var problems Problems
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	line := 0
	var last *Event
	for sc.Scan() {
		line++
		text := sc.Bytes()
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		ev, p, keep := parseOne(Source{File: name, Line: line}, text, line)
		if p != nil {
			problems = append(problems, *p)
		}
		if !keep {
			continue
		}
		if last != nil && ev.Sequence <= last.Sequence {
			problems = append(problems, ev.Problem("sequence", "out of order: follows sequence %d on line %d of the same file", last.Sequence, last.Source.Line))
		}
		evs = append(evs, ev)
		last = &evs[len(evs)-1]
	}
	if err := sc.Err(); err != nil {
		problems = append(problems, Problem{Source: Source{File: name, Line: line + 1}, Message: err.Error()})
	}
	return evs, problems
}

// parseOne decodes and checks one envelope. lineBase is the line of data's first byte for NDJSON (0 for
// whole files, whose syntax errors are located by counting lines). keep reports whether the event holds
// its place in the log: a complete envelope does, even of an unknown type.
func parseOne(src Source, data []byte, lineBase int) (ev Event, _ *Problem, keep bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(&ev)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = fmt.Errorf("unexpected content after the event object")
			off := dec.InputOffset()
			l, c := lineCol(data, off)
			if lineBase > 0 {
				l = lineBase
			}
			return ev, &Problem{Source: Source{File: src.File, Line: l}, Column: c, Message: err.Error()}, false
		}
	}
	if err != nil {
		return ev, decodeProblem(src, data, lineBase, err), false
	}
	ev.Source = src
	var missing []string
	if strings.TrimSpace(ev.EventID) == "" {
		missing = append(missing, "event_id")
	}
	if strings.TrimSpace(ev.AggregateID) == "" {
		missing = append(missing, "aggregate_id")
	}
	if ev.Sequence == 0 {
		missing = append(missing, "sequence")
	}
	if ev.Timestamp.IsZero() {
		missing = append(missing, "timestamp")
	}
	if ev.Type == "" {
		missing = append(missing, "event_type")
	}
	if len(missing) > 0 {
		p := ev.Problem(strings.Join(missing, ", "), "missing or empty (sequence starts at 1)")
		return ev, &p, false
	}
	if d := bytes.TrimSpace(ev.Data); len(d) == 0 || d[0] != '{' {
		p := ev.Problem("data", "must be a JSON object")
		return ev, &p, false
	}
	if !known(ev.Type) {
		p := ev.Problem("event_type", "unknown event type %q (known: %s)", ev.Type, strings.Join(Types, ", "))
		return ev, &p, true
	}
	return ev, nil, true
}

func known(t string) bool {
	for _, k := range Types {
		if k == t {
			return true
		}
	}
	return false
}

func decodeProblem(src Source, data []byte, lineBase int, err error) *Problem {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	p := &Problem{Source: src}
	switch {
	case errors.As(err, &syn):
		p.Source.Line, p.Column = lineCol(data, max(syn.Offset-1, 0)) // the offending byte
		p.Message = "bad JSON: " + syn.Error()
	case errors.As(err, &typ):
		p.Source.Line, p.Column = lineCol(data, typ.Offset)
		p.Field = typ.Field
		p.Message = fmt.Sprintf("bad JSON: %s where %s is expected", typ.Value, typ.Type)
	case errors.Is(err, io.EOF):
		p.Message = "bad JSON: empty file"
	case errors.Is(err, io.ErrUnexpectedEOF):
		p.Source.Line, p.Column = lineCol(data, int64(len(data)))
		p.Message = "bad JSON: unexpected end of input"
	default:
		p.Message = "bad JSON: " + err.Error()
	}
	if lineBase > 0 {
		p.Source.Line = lineBase
	}
	return p
}

// lineCol turns a byte offset into a 1-based line and column.
func lineCol(data []byte, off int64) (int, int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	before := data[:off]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// Order sorts events by sequence and reports duplicate event ids, duplicate sequences and gaps: a
// log's sequences run 1, 2, 3, ... without holes. Events whose id or sequence repeats an earlier one
// are left out of the result.
func Order(evs []Event) ([]Event, Problems) {
	var problems Problems
	sorted := make([]Event, len(evs))
	copy(sorted, evs)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Sequence < sorted[j].Sequence })

	ids := make(map[string]*Event, len(sorted))
	out := sorted[:0:0]
	var prev *Event
	for i := range sorted {
		ev := &sorted[i]
		switch {
		case prev != nil && ev.Sequence == prev.Sequence:
			problems = append(problems, ev.Problem("sequence", "duplicate sequence %d, also used at %s", ev.Sequence, prev.Source))
			continue
		case prev == nil && ev.Sequence != 1:
			problems = append(problems, ev.Problem("sequence", "gap: the log starts at %d, not 1", ev.Sequence))
		case prev != nil && ev.Sequence != prev.Sequence+1:
			problems = append(problems, ev.Problem("sequence", "gap: sequences %d to %d are missing (previous event at %s)", prev.Sequence+1, ev.Sequence-1, prev.Source))
		}
		prev = ev
		if first, ok := ids[ev.EventID]; ok {
			problems = append(problems, ev.Problem("event_id", "duplicate event id, first used by event %d at %s", first.Sequence, first.Source))
			continue
		}
		ids[ev.EventID] = ev
		out = append(out, *ev)
	}
	return out, problems
}
