package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// unmarshal is json.Unmarshal(data, v) for data that Decode's walker has accepted (valid JSON, keys
// exactly v's fields, no duplicates). The common values (strings without escapes, integers, booleans,
// structs, slices, maps with string keys, json.Unmarshaler types such as json.RawMessage and
// time.Time) are decoded directly, the way encoding/json decodes them, without its byte-by-byte
// scanner; at the first value of another kind (null, a float, an escaped string, a
// TextUnmarshaler, a value of the wrong type, ...) the whole of data is handed to json.Unmarshal,
// which then sets every field again and reports the errors in its own words.
func unmarshal(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && !rv.IsNil() {
		d := fastDecoder{data: data}
		d.space()
		if d.value(rv.Elem()) == nil {
			return nil
		}
	}
	return json.Unmarshal(data, v)
}

// errSlow is the fast decoder leaving a value to encoding/json.
var errSlow = errors.New("left to encoding/json")

type fastDecoder struct {
	data []byte
	i    int
}

// typeInfo is what the fast decoder needs to know of a type.
type typeInfo struct {
	unmarshaler bool           // *T implements json.Unmarshaler
	text        bool           // *T implements encoding.TextUnmarshaler (and not json.Unmarshaler)
	fields      map[string]int // a struct's fields by JSON name; nil: a struct left to encoding/json
}

var typeInfos sync.Map // reflect.Type -> *typeInfo

func infoOf(t reflect.Type) *typeInfo {
	if ti, ok := typeInfos.Load(t); ok {
		return ti.(*typeInfo)
	}
	pt := reflect.PointerTo(t)
	ti := &typeInfo{unmarshaler: pt.Implements(unmarshalerType)}
	ti.text = !ti.unmarshaler && pt.Implements(textUnmarshalerType)
	if t.Kind() == reflect.Struct {
		ti.fields = structFields(t)
	}
	typeInfos.Store(t, ti)
	return ti
}

// structFields maps the JSON names of t's fields to their indexes, or is nil when t has a field whose
// handling is encoding/json's alone: an embedded field, the ",string" option, a name that is not
// plainly valid, two fields of one name.
func structFields(t reflect.Type) map[string]int {
	fields := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		if f.Anonymous {
			return nil
		}
		if !f.IsExported() {
			continue
		}
		name, opts, _ := bytes.Cut([]byte(tag), []byte{','})
		for _, o := range bytes.Split(opts, []byte{','}) {
			if string(o) == "string" {
				return nil
			}
		}
		if len(name) == 0 {
			name = []byte(f.Name)
		}
		for _, c := range name {
			if !(c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return nil
			}
		}
		if _, dup := fields[string(name)]; dup {
			return nil
		}
		fields[string(name)] = i
	}
	return fields
}

func (d *fastDecoder) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\r', '\n':
			d.i++
		default:
			return
		}
	}
}

// str skips the string at d.i and returns its raw text, quotes included.
func (d *fastDecoder) str() []byte {
	start := d.i
	d.i++
	for d.data[d.i] != '"' {
		if d.data[d.i] == '\\' {
			d.i++
		}
		d.i++
	}
	d.i++
	return d.data[start:d.i]
}

// skip skips the value at d.i.
func (d *fastDecoder) skip() {
	depth := 0
	for {
		switch d.data[d.i] {
		case '"':
			d.str()
		case '{', '[':
			depth++
			d.i++
		case '}', ']':
			depth--
			d.i++
		default:
			for d.i < len(d.data) && strings.IndexByte(" \t\r\n,:]}", d.data[d.i]) < 0 {
				d.i++
			}
		}
		if depth == 0 {
			return
		}
		for d.i < len(d.data) && strings.IndexByte(" \t\r\n,:", d.data[d.i]) >= 0 {
			d.i++
		}
	}
}

// literal is the number or literal (true, false) at d.i.
func (d *fastDecoder) literal() []byte {
	start := d.i
	for d.i < len(d.data) && strings.IndexByte(" \t\r\n,]}", d.data[d.i]) < 0 {
		d.i++
	}
	return d.data[start:d.i]
}

// value decodes the value at d.i into v, as encoding/json's decodeState.value does.
func (d *fastDecoder) value(v reflect.Value) error {
	c := d.data[d.i]
	if c == 'n' { // null: encoding/json's rules for it are its own
		return errSlow
	}
	t := v.Type()
	if t.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		return d.value(v.Elem())
	}
	ti := infoOf(t)
	switch {
	case ti.unmarshaler:
		start := d.i
		d.skip()
		if err := v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(d.data[start:d.i]); err != nil {
			return errSlow
		}
		return nil
	case ti.text:
		return errSlow
	}
	switch t.Kind() {
	case reflect.String:
		if c != '"' {
			return errSlow
		}
		raw := d.str()
		if bytes.IndexByte(raw, '\\') >= 0 {
			return errSlow
		}
		v.SetString(string(raw[1 : len(raw)-1]))
	case reflect.Bool:
		switch lit := d.literal(); string(lit) {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			return errSlow
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if c != '-' && (c < '0' || c > '9') {
			return errSlow
		}
		n, err := strconv.ParseInt(string(d.literal()), 10, 64)
		if err != nil || v.OverflowInt(n) {
			return errSlow
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if c < '0' || c > '9' {
			return errSlow
		}
		n, err := strconv.ParseUint(string(d.literal()), 10, 64)
		if err != nil || v.OverflowUint(n) {
			return errSlow
		}
		v.SetUint(n)
	case reflect.Struct:
		if c != '{' || ti.fields == nil {
			return errSlow
		}
		return d.object(func(key []byte) (reflect.Value, bool) {
			i, ok := ti.fields[string(key)]
			if !ok {
				return reflect.Value{}, false
			}
			return v.Field(i), true
		}, nil)
	case reflect.Map:
		kt := t.Key()
		if c != '{' || kt.Kind() != reflect.String || reflect.PointerTo(kt).Implements(textUnmarshalerType) {
			return errSlow
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(t))
		}
		var elem reflect.Value
		return d.object(func([]byte) (reflect.Value, bool) {
			elem = reflect.New(t.Elem()).Elem()
			return elem, true
		}, func(key []byte) {
			k := reflect.New(kt).Elem()
			k.SetString(string(key))
			v.SetMapIndex(k, elem)
		})
	case reflect.Slice:
		if c != '[' {
			return errSlow
		}
		return d.slice(v)
	default:
		return errSlow
	}
	return nil
}

// object decodes the object at d.i: field gives where each key's value goes, then set (if not nil)
// stores it.
func (d *fastDecoder) object(field func(key []byte) (reflect.Value, bool), set func(key []byte)) error {
	d.i++ // {
	d.space()
	for d.data[d.i] != '}' {
		raw := d.str()
		if bytes.IndexByte(raw, '\\') >= 0 {
			return errSlow
		}
		key := raw[1 : len(raw)-1]
		fv, ok := field(key)
		if !ok {
			return errSlow
		}
		d.space()
		d.i++ // :
		d.space()
		if err := d.value(fv); err != nil {
			return err
		}
		if set != nil {
			set(key)
		}
		d.space()
		if d.data[d.i] == ',' {
			d.i++
			d.space()
		}
	}
	d.i++
	return nil
}

// slice decodes the array at d.i into the slice v, reusing its storage as encoding/json does.
func (d *fastDecoder) slice(v reflect.Value) error {
	d.i++ // [
	d.space()
	i := 0
	for d.data[d.i] != ']' {
		if i >= v.Cap() {
			v.Grow(1)
		}
		if i >= v.Len() {
			v.SetLen(i + 1)
		}
		if err := d.value(v.Index(i)); err != nil {
			return err
		}
		i++
		d.space()
		if d.data[d.i] == ',' {
			d.i++
			d.space()
		}
	}
	d.i++
	if i < v.Len() {
		v.SetLen(i)
	}
	if i == 0 {
		v.Set(reflect.MakeSlice(v.Type(), 0, 0))
	}
	return nil
}
