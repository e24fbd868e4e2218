// Package nixexpr writes Nix expressions from Go values: data (strings, integers, booleans, lists,
// attribute sets) is escaped so that Nix reads back exactly the value given, and code the generator
// writes itself is passed through as Raw.
//
// Printing is deterministic: attribute sets built from maps are sorted by name, ordered sets keep the
// order they were built in, and the layout depends only on the value.
package nixexpr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Value is a Nix expression.
type Value interface {
	write(p *printer, indent int)
}

type (
	// String is a Nix string, escaped when printed.
	String string
	// Int is a Nix integer (64-bit signed, as in Nix).
	Int int64
	// Bool is true or false.
	Bool bool
	// Null is null.
	Null struct{}
	// List is a list; it keeps its order.
	List []Value
	// Attrs is an attribute set printed sorted by name.
	Attrs map[string]Value
	// Set is an attribute set whose bindings keep their order; a binding's path may be dotted
	// (services.nats.enable = ...). An empty Binding prints a blank line.
	Set []Binding
	// Raw is Nix code written by the generator itself; it is printed as is and must never hold input.
	Raw string
)

// Call applies a function the generator names (trusted code, such as lib.mkForce) to a value; the
// value is printed and checked like any other.
type Call struct {
	Fn  string
	Arg Value
}

func (c Call) write(p *printer, indent int) {
	p.b.WriteString(c.Fn + " ")
	c.Arg.write(p, indent)
}

// Binding is one `path = value;` of a Set.
type Binding struct {
	Path  []string
	Value Value
}

// Bind is a binding whose path is given as dotted segments: Bind("matchConfig.Name", v) is two segments.
// Segments with other characters are quoted, so use the Path field directly when a name holds a dot.
func Bind(path string, v Value) Binding { return Binding{Path: strings.Split(path, "."), Value: v} }

// Blank is a blank line between groups of bindings.
var Blank = Binding{}

// ErrNotRepresentable is returned for values Nix cannot hold exactly: strings with NUL bytes or invalid
// UTF-8, non-integer or out-of-range numbers.
var ErrNotRepresentable = errors.New("not representable in Nix")

// Format prints v as Nix code at the given indentation (in spaces) of the line it starts on.
func Format(v Value, indent int) (string, error) {
	p := &printer{}
	v.write(p, indent)
	if p.err != nil {
		return "", p.err
	}
	return p.b.String(), nil
}

type printer struct {
	b   strings.Builder
	err error
}

func (p *printer) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

func pad(n int) string { return strings.Repeat(" ", n) }

func (s String) write(p *printer, _ int) {
	q, err := Quote(string(s))
	if err != nil {
		p.fail(err)
	}
	p.b.WriteString(q)
}

func (i Int) write(p *printer, _ int) {
	switch {
	case i == math.MinInt64:
		// The literal 9223372036854775808 does not fit; Nix has no negative literals.
		p.b.WriteString("(-9223372036854775807 - 1)")
	case i < 0:
		// A negative number is the unary minus operator: parenthesised so it can sit in a list.
		p.b.WriteString("(" + strconv.FormatInt(int64(i), 10) + ")")
	default:
		p.b.WriteString(strconv.FormatInt(int64(i), 10))
	}
}

func (b Bool) write(p *printer, _ int) { p.b.WriteString(strconv.FormatBool(bool(b))) }

func (Null) write(p *printer, _ int) { p.b.WriteString("null") }

func (r Raw) write(p *printer, _ int) { p.b.WriteString(string(r)) }

// maxInline is the widest list still printed on one line.
const maxInline = 72

func (l List) write(p *printer, indent int) {
	if len(l) == 0 {
		p.b.WriteString("[ ]")
		return
	}
	if inline, ok := l.inline(); ok {
		p.b.WriteString(inline)
		return
	}
	p.b.WriteString("[\n")
	for _, v := range l {
		p.b.WriteString(pad(indent + 2))
		v.write(p, indent+2)
		p.b.WriteString("\n")
	}
	p.b.WriteString(pad(indent) + "]")
}

// inline prints a short list of scalars on one line.
func (l List) inline() (string, bool) {
	var b strings.Builder
	b.WriteString("[")
	for _, v := range l {
		switch v.(type) {
		case String, Int, Bool, Null:
		default:
			return "", false
		}
		s, err := Format(v, 0)
		if err != nil {
			return "", false // printed again by write, which reports the error
		}
		b.WriteString(" " + s)
		if b.Len() > maxInline {
			return "", false
		}
	}
	b.WriteString(" ]")
	return b.String(), true
}

func (a Attrs) write(p *printer, indent int) {
	names := make([]string, 0, len(a))
	for name := range a {
		names = append(names, name)
	}
	sort.Strings(names)
	set := make(Set, 0, len(a))
	for _, name := range names {
		set = append(set, Binding{Path: []string{name}, Value: a[name]})
	}
	set.write(p, indent)
}

func (s Set) write(p *printer, indent int) {
	if len(s) == 0 {
		p.b.WriteString("{ }")
		return
	}
	p.b.WriteString("{\n")
	for _, bnd := range s {
		if len(bnd.Path) == 0 {
			p.b.WriteString("\n")
			continue
		}
		p.b.WriteString(pad(indent + 2))
		for i, seg := range bnd.Path {
			if i > 0 {
				p.b.WriteString(".")
			}
			name, err := AttrName(seg)
			if err != nil {
				p.fail(err)
			}
			p.b.WriteString(name)
		}
		p.b.WriteString(" = ")
		bnd.Value.write(p, indent+2)
		p.b.WriteString(";\n")
	}
	p.b.WriteString(pad(indent) + "}")
}

// Quote returns s as a Nix double-quoted string literal that evaluates to exactly s.
// `"`, `\` and `${` are escaped, as are newline, carriage return (which Nix would otherwise normalise)
// and tab. Strings holding a NUL byte or invalid UTF-8 are refused.
func Quote(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", fmt.Errorf("string %q holds a NUL byte: %w", truncate(s), ErrNotRepresentable)
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("string %q is not valid UTF-8: %w", truncate(s), ErrNotRepresentable)
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '$':
			if i+1 < len(s) && s[i+1] == '{' {
				b.WriteString(`\$`)
			} else {
				b.WriteByte('$')
			}
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String(), nil
}

// isIdentifier reports whether s is a Nix identifier: [A-Za-z_][A-Za-z0-9_'-]*.
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '\'' || c == '-')) {
			return false
		}
	}
	return true
}

// keywords cannot be bare attribute names (or is one only in some positions; it is quoted anyway).
var keywords = map[string]bool{
	"if": true, "then": true, "else": true, "assert": true, "with": true,
	"let": true, "in": true, "rec": true, "inherit": true, "or": true,
}

// AttrName returns name as an attribute name: bare when it is an identifier, quoted otherwise.
func AttrName(name string) (string, error) {
	if isIdentifier(name) && !keywords[name] {
		return name, nil
	}
	return Quote(name)
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// FromJSON converts a value decoded by encoding/json (with UseNumber) into a Nix value: objects become
// sorted attribute sets. Numbers must be integers that fit in 64 bits.
func FromJSON(v any) (Value, error) {
	switch v := v.(type) {
	case nil:
		return Null{}, nil
	case bool:
		return Bool(v), nil
	case string:
		return String(v), nil
	case json.Number:
		i, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("number %s is not a 64-bit integer: %w", v, ErrNotRepresentable)
		}
		return Int(i), nil
	case []any:
		l := make(List, len(v))
		for i, e := range v {
			ev, err := FromJSON(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			l[i] = ev
		}
		return l, nil
	case map[string]any:
		a := make(Attrs, len(v))
		for k, e := range v {
			ev, err := FromJSON(e)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			a[k] = ev
		}
		return a, nil
	default:
		return nil, fmt.Errorf("unsupported JSON value of type %T: %w", v, ErrNotRepresentable)
	}
}

// Marshal converts any JSON-encodable Go value into a Nix value through its JSON form, so the Nix
// attribute names are the value's JSON names.
func Marshal(v any) (Value, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, err
	}
	return FromJSON(generic)
}
