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
	w := &walker{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	w.dec.UseNumber()
	if err := w.value(reflect.TypeOf(v), "", 0); err != nil {
		return err
	}
	off := w.dec.InputOffset()
	if _, err := w.dec.Token(); err != io.EOF {
		return &DecodeError{Offset: skipSpace(data, off), Message: "unexpected content after the JSON value"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, data)
	}
	return nil
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

// walker walks a JSON value token by token alongside the Go type it decodes into.
type walker struct {
	data []byte
	dec  *json.Decoder
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

func (w *walker) value(t reflect.Type, path string, depth int) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	start := w.dec.InputOffset()
	tok, err := w.dec.Token()
	if err != nil {
		return w.tokenError(err, path, start)
	}
	switch tok := tok.(type) {
	case json.Delim:
		if depth >= MaxDepth {
			return &DecodeError{Path: path, Offset: skipSpace(w.data, start), Message: fmt.Sprintf("nested more than %d levels deep", MaxDepth)}
		}
		if tok == '{' {
			return w.object(t, path, depth+1)
		}
		var elem reflect.Type
		if t != nil && !opaque(t) && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(elem, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
		_, err := w.dec.Token() // ]
		return w.tokenError(err, path, w.dec.InputOffset())
	case string:
		if t == timeType {
			// encoding/json's error for a time names neither the field nor a bounded value.
			if _, err := time.Parse(time.RFC3339, tok); err != nil {
				return &DecodeError{Path: path, Offset: skipSpace(w.data, start), Message: fmt.Sprintf("%s is not an RFC 3339 time such as 2025-11-20T10:00:00Z", Excerpt(tok))}
			}
		}
		if i := loneSurrogate(w.data[start:w.dec.InputOffset()]); i >= 0 {
			return &DecodeError{Path: path, Offset: start + int64(i), Message: "a \\u escape is a lone UTF-16 surrogate, not a character"}
		}
	}
	return nil
}

func (w *walker) object(t reflect.Type, path string, depth int) error {
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case opaque(t):
	case t.Kind() == reflect.Struct:
		fields = fieldsOf(t)
	case t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	seen := map[string]bool{}
	for w.dec.More() {
		start := w.dec.InputOffset()
		tok, err := w.dec.Token()
		if err != nil {
			return w.tokenError(err, path, start)
		}
		key := tok.(string) // More and Token guarantee a key here
		keyOff := start + int64(bytes.IndexByte(w.data[start:w.dec.InputOffset()], '"'))
		field := join(path, key)
		if i := loneSurrogate(w.data[start:w.dec.InputOffset()]); i >= 0 {
			return &DecodeError{Path: path, Offset: start + int64(i), Message: "a \\u escape in a key is a lone UTF-16 surrogate, not a character"}
		}
		if seen[key] {
			return &DecodeError{Path: field, Offset: keyOff, Message: fmt.Sprintf("duplicate key %s: an object holds each key once", Excerpt(key))}
		}
		seen[key] = true
		vt := elem
		if fields != nil {
			ft, ok := fields[key]
			if !ok {
				msg := fmt.Sprintf("unknown field %s", Excerpt(key))
				for name := range fields {
					if strings.EqualFold(name, key) {
						msg += fmt.Sprintf(" (keys are matched exactly: the field is %q)", name)
						break
					}
				}
				return &DecodeError{Path: field, Offset: keyOff, Message: msg}
			}
			vt = ft
		}
		if err := w.value(vt, field, depth); err != nil {
			return err
		}
	}
	_, err := w.dec.Token() // }
	return w.tokenError(err, path, w.dec.InputOffset())
}

func (w *walker) tokenError(err error, path string, off int64) error {
	if err == nil {
		return nil
	}
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn): // Token's offsets are those of the offending byte
		return &DecodeError{Offset: syn.Offset, Message: "bad JSON: " + syn.Error(), Err: err}
	case errors.Is(err, io.EOF) && off == 0:
		return &DecodeError{Message: "empty", Err: err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &DecodeError{Offset: int64(len(w.data)), Message: "bad JSON: unexpected end of input", Err: io.ErrUnexpectedEOF}
	}
	return &DecodeError{Path: path, Offset: off, Message: "bad JSON: " + bounded(err.Error()), Err: err}
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
