package events

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// MaxDepth is how deeply objects and arrays may nest in an event. The deepest field of the envelope and
// its payloads (data.nodes[0].interfaces[0].addresses[0].address) is 7 levels down.
const MaxDepth = 32

// DecodeError is a value that Decode refuses: where (the JSON path of the field, such as
// nodes[0].name, and the byte offset in the input) and why. Messages quote values with Excerpt.
type DecodeError struct {
	Path    string
	Offset  int64
	Message string
	Err     error // the underlying error, if any (a *json.SyntaxError, io.EOF, ...)
}

func (e *DecodeError) Error() string {
	if e.Path == "" {
		return e.Message
	}
	return e.Path + ": " + e.Message
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Decode decodes the JSON value data into v as strictly as docs/events.md says, beyond what
// encoding/json checks on its own:
//   - data is UTF-8, and no \u escape is a lone surrogate (encoding/json turns both into U+FFFD);
//   - object keys match v's field names exactly (encoding/json matches them case-insensitively, so
//     "Event_Type" would set event_type), and a key that names no field is refused;
//   - no object has a key twice, at any depth, in v's fields or in raw values (json.RawMessage) alike
//     (encoding/json keeps the last one silently);
//   - nesting is at most MaxDepth levels; nothing follows the value.
//
// These are the rules of I-JSON (RFC 7493, sections 2.1 and 2.3) plus exact keys. The error is a
// *DecodeError.
func Decode(data []byte, v any) error {
	if i := invalidUTF8(data); i >= 0 {
		return &DecodeError{Offset: int64(i), Message: fmt.Sprintf("invalid UTF-8: byte 0x%02x at offset %d", data[i], i)}
	}
	if !valid(data) { // json.Valid, faster
		return syntaxError(data, v)
	}
	w := walkers.Get().(*walker)
	w.data, w.i = data, 0
	w.space()
	err := w.value(reflect.TypeOf(v), 0)
	w.data, w.path = nil, w.path[:0]
	clear(w.path[:cap(w.path)])
	walkers.Put(w)
	if err != nil {
		return err
	}
	// The walker has refused unknown fields (exactly); what is left are values of the wrong type.
	if err := unmarshal(data, v); err != nil {
		return decodeError(err, data)
	}
	return nil
}

// syntaxError explains why data is not one JSON value.
func syntaxError(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	err := dec.Decode(v)
	var syn *json.SyntaxError
	switch {
	case err == nil:
		return &DecodeError{Offset: skipSpace(data, dec.InputOffset()), Message: "unexpected content after the JSON value"}
	case errors.Is(err, io.EOF):
		return &DecodeError{Message: "empty", Err: err}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &DecodeError{Offset: int64(len(data)), Message: "bad JSON: unexpected end of input", Err: err}
	case errors.As(err, &syn):
		return &DecodeError{Offset: max(syn.Offset-1, 0), Message: "bad JSON: " + bounded(syn.Error()), Err: err}
	}
	return &DecodeError{Message: "bad JSON: " + bounded(err.Error()), Err: err}
}

// walker walks a JSON value that json.Valid accepts, alongside the Go type it decodes into. It
// allocates little: the path to the value is a stack of steps, turned into a string only for an error.
type walker struct {
	data []byte
	i    int
	path []pathElem
}

// walkers keeps walkers and their path stacks for the next Decode.
var walkers = sync.Pool{New: func() any { return &walker{path: make([]pathElem, 0, 16)} }}

// pathElem is one step of the path to a value: a key (its raw JSON text), or an index when key is nil.
type pathElem struct {
	key   []byte
	index int
}

// pathString is the path to the value being walked, such as nodes[0].name.
func (w *walker) pathString() string {
	s := ""
	for _, p := range w.path {
		if p.key == nil {
			s = fmt.Sprintf("%s[%d]", s, p.index)
			continue
		}
		s = join(s, unquote(p.key))
	}
	return s
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	timeType            = reflect.TypeFor[time.Time]()
)

// opaque reports whether t takes any JSON value (nil: unknown), so its keys are not checked against
// field names.
func opaque(t reflect.Type) bool {
	if t == nil {
		return true
	}
	if t.Kind() != reflect.Pointer {
		t = reflect.PointerTo(t)
	}
	return t.Implements(unmarshalerType) || t.Implements(textUnmarshalerType)
}

func (w *walker) space() {
	for w.i < len(w.data) {
		switch w.data[w.i] {
		case ' ', '\t', '\r', '\n':
			w.i++
		default:
			return
		}
	}
}

// str skips the string at w.i and returns its raw text, quotes included.
func (w *walker) str() []byte {
	start := w.i
	w.i++
	for w.data[w.i] != '"' {
		if w.data[w.i] == '\\' {
			w.i++
		}
		w.i++
	}
	w.i++
	return w.data[start:w.i]
}

func (w *walker) value(t reflect.Type, depth int) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	start := w.i
	switch w.data[w.i] {
	case '{', '[':
		if depth >= MaxDepth {
			return &DecodeError{Path: w.pathString(), Offset: int64(start), Message: fmt.Sprintf("nested more than %d levels deep", MaxDepth)}
		}
		if w.data[w.i] == '{' {
			return w.object(t, depth+1)
		}
		var elem reflect.Type
		if t != nil && !opaque(t) && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		w.i++
		w.space()
		for i := 0; w.data[w.i] != ']'; i++ {
			w.path = append(w.path, pathElem{index: i})
			if err := w.value(elem, depth+1); err != nil {
				return err
			}
			w.path = w.path[:len(w.path)-1]
			w.space()
			if w.data[w.i] == ',' {
				w.i++
				w.space()
			}
		}
		w.i++
	case '"':
		raw := w.str()
		if i := loneSurrogate(raw); i >= 0 {
			return &DecodeError{Path: w.pathString(), Offset: int64(start + i), Message: "a \\u escape is a lone UTF-16 surrogate, not a character"}
		}
		if t == timeType {
			// encoding/json's error for a time names neither the field nor a bounded value.
			if s := unquote(raw); !validTime(s) {
				return &DecodeError{Path: w.pathString(), Offset: int64(start), Message: fmt.Sprintf("%s is not an RFC 3339 time such as 2025-11-20T10:00:00Z", Excerpt(s))}
			}
		}
	default: // number, true, false, null
		for w.i < len(w.data) && !strings.ContainsRune(" \t\r\n,]}", rune(w.data[w.i])) {
			w.i++
		}
	}
	return nil
}

func validTime(s string) bool {
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}

// smallObject is how many keys an object may have before duplicates are found with a map.
const smallObject = 16

func (w *walker) object(t reflect.Type, depth int) error {
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case opaque(t):
	case t.Kind() == reflect.Struct:
		fields = fieldsOf(t)
	case t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	var small [smallObject][]byte
	keys := small[:0] // the unquoted keys so far, while the object is small
	var seen map[string]bool
	w.i++ // {
	w.space()
	for w.data[w.i] != '}' {
		keyOff := w.i
		raw := w.str()
		if i := loneSurrogate(raw); i >= 0 {
			return &DecodeError{Path: w.pathString(), Offset: int64(keyOff + i), Message: "a \\u escape in a key is a lone UTF-16 surrogate, not a character"}
		}
		key := raw[1 : len(raw)-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			key = []byte(unquote(raw))
		}
		w.path = append(w.path, pathElem{key: raw})
		dup := false
		if seen == nil && len(keys) < smallObject {
			for _, k := range keys {
				dup = dup || bytes.Equal(k, key)
			}
			keys = append(keys, key)
		} else {
			if seen == nil {
				seen = make(map[string]bool, 2*smallObject)
				for _, k := range keys {
					seen[string(k)] = true
				}
			}
			dup = seen[string(key)]
			seen[string(key)] = true
		}
		if dup {
			return &DecodeError{Path: w.pathString(), Offset: int64(keyOff), Message: fmt.Sprintf("duplicate key %s: an object holds each key once", Excerpt(string(key)))}
		}
		vt := elem
		if fields != nil {
			ft, ok := fields[string(key)]
			if !ok {
				msg := fmt.Sprintf("unknown field %s", Excerpt(string(key)))
				for name := range fields {
					if strings.EqualFold(name, string(key)) {
						msg += fmt.Sprintf(" (keys are matched exactly: the field is %q)", name)
						break
					}
				}
				return &DecodeError{Path: w.pathString(), Offset: int64(keyOff), Message: msg}
			}
			vt = ft
		}
		w.space()
		w.i++ // :
		w.space()
		if err := w.value(vt, depth); err != nil {
			return err
		}
		w.path = w.path[:len(w.path)-1]
		w.space()
		if w.data[w.i] == ',' {
			w.i++
			w.space()
		}
	}
	w.i++ // }
	return nil
}

// unquote is the string the JSON string literal raw stands for.
func unquote(raw []byte) string {
	if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return string(raw)
	}
	return s
}

// join appends key to path; keys that are not plain are quoted (and shortened).
func join(path, key string) string {
	k := key
	if !plain(k) || len(k) > ExcerptMax || strings.ContainsAny(k, ".[]") {
		k = "[" + Excerpt(k) + "]"
		return path + k
	}
	if path == "" {
		return k
	}
	return path + "." + k
}

// fieldsOf maps the JSON names of t's fields to their types, as encoding/json names them.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for n, t := range fieldsOf(ft) {
					fields[n] = t
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	fieldCache.Store(t, fields)
	return fields
}

var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type; types are static

// loneSurrogate finds a \u escape in the JSON text raw that is half of a UTF-16 surrogate pair without
// its other half, and returns its offset, or -1.
func loneSurrogate(raw []byte) int {
	hex4 := func(i int) rune {
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return -1
		}
		v, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
		if err != nil {
			return -1
		}
		return rune(v)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' || i+1 >= len(raw) {
			continue
		}
		if raw[i+1] != 'u' {
			i++
			continue
		}
		switch r := hex4(i); {
		case r >= 0xd800 && r < 0xdc00:
			if lo := hex4(i + 6); lo < 0xdc00 || lo > 0xdfff {
				return i
			}
			i += 11
		case r >= 0xdc00 && r <= 0xdfff:
			return i
		default:
			i += 5
		}
	}
	return -1
}

// skipSpace skips white space and separators from off: where the next token starts.
func skipSpace(data []byte, off int64) int64 {
	for off < int64(len(data)) && strings.IndexByte(" \t\r\n:,", data[off]) >= 0 {
		off++
	}
	return off
}

// decodeError turns an error of encoding/json (the walker has found none) into a DecodeError whose
// message echoes no value whole.
func decodeError(err error, data []byte) *DecodeError {
	var typ *json.UnmarshalTypeError
	var syn *json.SyntaxError
	var tpe *time.ParseError
	switch {
	case errors.As(err, &typ):
		return &DecodeError{Path: typ.Field, Offset: typ.Offset, Message: fmt.Sprintf("%s where %s is expected", boundedTo(typ.Value, ExcerptMax), typ.Type), Err: err}
	case errors.As(err, &syn):
		return &DecodeError{Offset: max(syn.Offset-1, 0), Message: "bad JSON: " + syn.Error(), Err: err}
	case errors.As(err, &tpe):
		return &DecodeError{Message: fmt.Sprintf("%s is not an RFC 3339 time such as 2025-11-20T10:00:00Z", Excerpt(tpe.Value)), Err: err}
	}
	return &DecodeError{Message: bounded(err.Error()), Err: err}
}

// bounded shortens a message from a library that may hold a value of the input.
func bounded(s string) string { return boundedTo(s, 4*ExcerptMax) }

// boundedTo cuts s to at most limit bytes (at a character boundary) and says how long it was.
func boundedTo(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:cut], len(s))
}

// invalidUTF8 is the offset of the first byte that is not UTF-8, or -1.
func invalidUTF8(data []byte) int {
	if utf8.Valid(data) {
		return -1
	}
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}
