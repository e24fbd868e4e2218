// Package events reads the domain events of an infrastructure repository: one event per JSON file or
// many per NDJSON file, in the envelope the CIM event stores write. Load checks the envelopes and the
// order of the log; what the events mean is gitops/topology's business.
package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
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
	DomainAccountDefined   = "DomainAccountDefined"
	DomainUserAdded        = "DomainUserAdded"
	DomainPermissionsSet   = "DomainPermissionsSet"
	DomainExportDefined    = "DomainExportDefined"
	DomainImportDefined    = "DomainImportDefined"
	SystemUserAdded        = "SystemUserAdded"
	ClusterSecured         = "ClusterSecured"
	OperatorAdded          = "OperatorAdded"
	RoleDefined            = "RoleDefined"
)

// Types lists the known event types.
var Types = []string{DomainCreated, NetworkTopologyUpdated, NodeAdded, NodeUpdated, NodeRemoved, ServiceAdded, ServiceConfigured,
	DomainAccountDefined, DomainUserAdded, DomainPermissionsSet, DomainExportDefined, DomainImportDefined, SystemUserAdded,
	ClusterSecured, OperatorAdded, RoleDefined}

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
	Err      error // the cause, when the problem is not the events' own (a read error, ctx.Err())
}

// A problem's field and message are short by construction (values are quoted with Excerpt); these
// bounds make sure of it.
const (
	maxField   = 256
	maxMessage = 1024
)

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
			fmt.Fprintf(&b, " (%s)", excerptID(p.EventID))
		}
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(boundedTo(p.Field, maxField) + ": ")
	}
	b.WriteString(boundedTo(p.Message, maxMessage))
	return b.String()
}

// Problems is every problem found in one pass; it is an error when not empty.
type Problems []Problem

// MaxListed is how many problems Problems.Error lists; it says how many more there are.
const MaxListed = 100

func (ps Problems) Error() string {
	lines := make([]string, 0, min(len(ps), MaxListed)+1)
	for _, p := range ps[:min(len(ps), MaxListed)] {
		lines = append(lines, p.String())
	}
	if len(ps) > MaxListed {
		lines = append(lines, fmt.Sprintf("and %d more", len(ps)-MaxListed))
	}
	return fmt.Sprintf("%d problem(s) in the events:\n  %s", len(ps), strings.Join(lines, "\n  "))
}

// Unwrap returns the causes of the problems that have one, such as context.Canceled when reading
// stopped: errors.Is and errors.As see through Problems.
func (ps Problems) Unwrap() []error {
	var errs []error
	for _, p := range ps {
		if p.Err != nil {
			errs = append(errs, p.Err)
		}
	}
	return errs
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

// Parse reads the events of one file: a single JSON object for .json, one object per line otherwise.
// name locates the problems. A file that is not UTF-8 is refused whole.
func Parse(name string, data []byte) ([]Event, Problems) {
	if i := invalidUTF8(data); i >= 0 {
		l, c := lineCol(data, int64(i))
		return nil, Problems{{Source: Source{File: name, Line: l}, Column: c,
			Message: fmt.Sprintf("invalid UTF-8: byte 0x%02x at byte offset %d; event files are UTF-8", data[i], i)}}
	}
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
	// Room for one event a line, but no more than could fit: a complete envelope is over 100 bytes.
	evs := make([]Event, 0, min(bytes.Count(data, []byte{'\n'}), len(data)/100)+1)
	var problems Problems
	var last *Event
	for line, rest := 1, data; len(rest) > 0; line++ {
		text, after, _ := bytes.Cut(rest, []byte{'\n'})
		rest = after
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
	return evs, problems
}

// The envelope's identifiers: event_id, aggregate_id, correlation_id and causation_id. UUIDs, names of
// nodes and services, and topology ids fit; what would need quoting in a log line does not.
const MaxIDLength = 128

var idChars = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)

func checkID(s string) string {
	switch {
	case len(s) > MaxIDLength:
		return fmt.Sprintf("%s is longer than %d bytes", Excerpt(s), MaxIDLength)
	case !isID(s):
		return fmt.Sprintf("%s is not an identifier (letters, digits, '.', '_', ':' and '-', starting with a letter or digit)", Excerpt(s))
	}
	return ""
}

// parseOne decodes and checks one envelope. lineBase is the line of data's first byte for NDJSON (0 for
// whole files, whose syntax errors are located by counting lines). keep reports whether the event holds
// its place in the log: a complete envelope does, even of an unknown type.
func parseOne(src Source, data []byte, lineBase int) (ev Event, _ *Problem, keep bool) {
	if err := Decode(data, &ev); err != nil {
		return Event{}, decodeProblem(src, data, lineBase, err), false
	}
	ev.Source = src
	var missing []string
	if ev.EventID == "" {
		missing = append(missing, "event_id")
	}
	if ev.AggregateID == "" {
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
	for _, id := range []struct{ field, value string }{
		{"event_id", ev.EventID}, {"aggregate_id", ev.AggregateID},
		{"correlation_id", ev.CorrelationID}, {"causation_id", ev.CausationID},
	} {
		if id.value == "" {
			continue // only the optional ones are left empty here
		}
		if msg := checkID(id.value); msg != "" {
			p := ev.Problem(id.field, "%s", msg)
			if id.field == "event_id" {
				p.EventID = ""
			}
			return ev, &p, false
		}
	}
	if d := bytes.TrimSpace(ev.Data); len(d) == 0 || d[0] != '{' {
		p := ev.Problem("data", "must be a JSON object")
		return ev, &p, false
	}
	if !known(ev.Type) {
		p := ev.Problem("event_type", "unknown event type %s (known: %s)", Excerpt(ev.Type), strings.Join(Types, ", "))
		return ev, &p, true
	}
	return ev, nil, true
}

func known(t string) bool {
	return slices.Contains(Types, t)
}

// decodeProblem locates a Decode error in data (a whole file, or the line lineBase of an NDJSON file).
func decodeProblem(src Source, data []byte, lineBase int, err error) *Problem {
	p := &Problem{Source: src}
	var de *DecodeError
	if !errors.As(err, &de) {
		p.Message = "bad JSON: " + bounded(err.Error())
		return p
	}
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF) && de.Message == "empty":
		p.Message = "bad JSON: empty file"
	case errors.As(err, &typ):
		p.Source.Line, p.Column = lineCol(data, de.Offset)
		p.Message = "bad JSON: " + de.Message
	default:
		p.Source.Line, p.Column = lineCol(data, de.Offset)
		p.Message = de.Message
	}
	p.Field = de.Path
	if lineBase > 0 {
		p.Source.Line = lineBase
	}
	return p
}

// lineCol turns a byte offset into a 1-based line and column.
func lineCol(data []byte, off int64) (int, int) {
	off = min(max(off, 0), int64(len(data)))
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
	out := make([]Event, 0, len(sorted))
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
