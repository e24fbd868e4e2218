package events

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

type sample struct {
	S  string           `json:"s"`
	I  int              `json:"i"`
	I8 int8             `json:"i8"`
	U  uint64           `json:"u"`
	B  bool             `json:"b"`
	P  *inner           `json:"p"`
	L  []inner          `json:"l"`
	M  map[string]inner `json:"m"`
	SS []string         `json:"ss,omitempty"`
	R  json.RawMessage  `json:"r"`
	T  time.Time        `json:"t"`
	F  float64          `json:"f"`
	A  netip.Addr       `json:"a"`
	X  any              `json:"x"`
	Q  int              `json:"q,string"`
}

type inner struct {
	N int    `json:"n"`
	S string `json:"s"`
	L []int  `json:"l"`
}

type embeds struct {
	inner
	Z int `json:"z"`
}

// targets are fresh values to decode into, each twice alike: zero ones and ones already set (the
// fold decodes updates onto what earlier events set).
func targets() []func() any {
	return []func() any{
		func() any { return new(sample) },
		func() any {
			l := make([]inner, 1, 4)
			l[0] = inner{N: 7, L: []int{1, 2, 3}}
			return &sample{S: "old", I: 3, P: &inner{N: 1, S: "x"}, L: l, M: map[string]inner{"k": {N: 2}}, SS: []string{"a", "b"}, R: json.RawMessage(`{"old":1}`)}
		},
		func() any { return new(Event) },
		func() any { return new(map[string][]inner) },
		func() any { return new([]*inner) },
		func() any { return new(embeds) },
		func() any { return new(json.RawMessage) },
	}
}

// FuzzUnmarshal checks the fast decoder against encoding/json: for every input Decode's walker
// accepts, decoding into the same value (zero or already set) gives the same value and the same error.
//
//	go test ./gitops/events -run '^$' -fuzz FuzzUnmarshal
func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{
		`{"s":"a","i":-3,"i8":127,"u":18446744073709551615,"b":true,"p":{"n":1},"l":[{"n":1,"l":[4]}],"m":{"a":{"s":"x"}},"ss":["x"],"r":{"a":[1,2]},"t":"2025-11-20T10:00:00Z"}`,
		`{"i8":128}`, `{"i":1.5}`, `{"i":"1"}`, `{"u":-1}`, `{"s":"a\"b"}`, `{"s":"\u00e9"}`, `{"p":null}`, `{"l":[]}`, `{"l":[{},{}]}`,
		`{"ss":null}`, `{"b":1}`, `{"f":1.5}`, `{"a":"10.0.0.1"}`, `{"x":{"y":[1]}}`, `{"q":"12"}`, `{"m":{"a":{"n":1},"b":{}}}`,
		`{"t":"2025-11-20T10:00:00+01:00"}`, `{"r":null}`, `{"l":[{"l":[1,2,3,4,5]}]}`, `{"z":1,"n":2}`, `{"a":[{"n":1}]}`, `[{"n":1},{"s":"x"}]`,
		`{"event_id":"a","sequence":3,"data":{}}`, `"x"`, `[]`, `{}`, `1`, `{"sequence":1e3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, target := range targets() {
			fast, slow := target(), target()
			if !json.Valid(data) || invalidUTF8(data) >= 0 {
				return
			}
			w := &walker{data: data}
			w.space()
			if w.value(reflect.TypeOf(fast), 0) != nil {
				continue // Decode refuses it before decoding
			}
			errFast, errSlow := unmarshal(data, fast), json.Unmarshal(data, slow)
			if fmt.Sprint(errFast) != fmt.Sprint(errSlow) {
				t.Fatalf("%T from %s: error %v, encoding/json's %v", fast, data, errFast, errSlow)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%T from %s:\n%#v\nencoding/json:\n%#v", fast, data, fast, slow)
			}
		}
	})
}

// TestIsID holds isID to the regular expression it replaces.
func TestIsID(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "a", "A9", "9", "a.b_c:d-e", ".a", "_a", ":a", "-a", "a b", "a/b", "é", "a\n", "ev-1", "a..", "Z-", "a\x00"} {
		if got, want := isID(s), idChars.MatchString(s); got != want {
			t.Errorf("isID(%q) = %t, the regexp says %t", s, got, want)
		}
	}
}

// TestValidNesting: valid refuses what is nested deeper than encoding/json's limit, as json.Valid does.
func TestValidNesting(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		strings.Repeat("[", maxNesting) + strings.Repeat("]", maxNesting),
		strings.Repeat("[", maxNesting+1) + strings.Repeat("]", maxNesting+1),
		strings.Repeat(`{"a":`, maxNesting) + "1" + strings.Repeat("}", maxNesting),
		strings.Repeat(`{"a":`, maxNesting+1) + "1" + strings.Repeat("}", maxNesting+1),
	} {
		if got, want := valid([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Errorf("valid(%.20q… %d bytes) = %t, json.Valid says %t", s, len(s), got, want)
		}
	}
}

// FuzzValid holds valid to json.Valid.
//
//	go test ./gitops/events -run '^$' -fuzz FuzzValid
func FuzzValid(f *testing.F) {
	for _, s := range []string{
		"", " ", "{}", "[]", `{"a":[1,-2.5e+3,true,false,null,"x\u00e9\n"]}`, "01", "-", "1.", "1e", "1e+", ".5", "-0", "0.0e0",
		`"\x"`, `"\u12"`, `"\u12G4"`, "\"a\x01\"", "\"\x7f\xff\"", `{"a" 1}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{1:2}`, "nul", "truex", "[] []",
		`{"a":{"b":[[[]]]}}`, "\t[\r\n]\n", "[" + `"` + "\\",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := valid(data), json.Valid(data); got != want {
			t.Fatalf("valid(%q) = %t, json.Valid says %t", data, got, want)
		}
	})
}
