package nixexpr_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/nixexpr"
	"github.com/cimdeploy/cimdeploy/nixrunner"
)

// tricky strings: every escape Nix knows and the ones it would misread.
var tricky = []string{
	"", "plain", `"`, `\`, `\\`, `\"`, "${", "$${", "$", "$$", "${x}", "$${x}", `\${x}`, "a$", "$\\", "$\"",
	"''", "'''", "''${", "\n", "\r", "\r\n", "\t", "\x01\x7f", "é ü 日本 🙂", "#", "/*", "*/", "{ }", "x;y",
	"$\n{", "${${", "}}", `"${builtins.abort "x"}"`,
}

func TestQuoteRefusesWhatNixCannotHold(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"a\x00b", "\xff\xfe"} {
		if _, err := nixexpr.Quote(s); !errors.Is(err, nixexpr.ErrNotRepresentable) {
			t.Errorf("Quote(%q) = %v, want ErrNotRepresentable", s, err)
		}
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    nixexpr.Value
		want string
	}{
		{"negative int is parenthesised", nixexpr.List{nixexpr.Int(-5), nixexpr.Int(3)}, "[ (-5) 3 ]"},
		{"min int", nixexpr.Int(math.MinInt64), "(-9223372036854775807 - 1)"},
		{"sorted attrs", nixexpr.Attrs{"b": nixexpr.Int(1), "a": nixexpr.Bool(true)}, "{\n  a = true;\n  b = 1;\n}"},
		{"keywords and odd names are quoted", nixexpr.Attrs{"in": nixexpr.Null{}, "10-eth0": nixexpr.Null{}, "a.b": nixexpr.Null{}, "nats-1": nixexpr.Null{}},
			"{\n  \"10-eth0\" = null;\n  \"a.b\" = null;\n  \"in\" = null;\n  nats-1 = null;\n}"},
		{"empty", nixexpr.List{nixexpr.Attrs{}, nixexpr.List{}}, "[\n  { }\n  [ ]\n]"},
		{"long list breaks", nixexpr.List{nixexpr.String(strings.Repeat("a", 40)), nixexpr.String(strings.Repeat("b", 40))},
			"[\n  \"" + strings.Repeat("a", 40) + "\"\n  \"" + strings.Repeat("b", 40) + "\"\n]"},
		{"call", nixexpr.Call{Fn: "lib.mkForce", Arg: nixexpr.String("/var/lib/${x}")}, `lib.mkForce "/var/lib/\${x}"`},
		{"dotted bindings", nixexpr.Set{nixexpr.Bind("a.b", nixexpr.Int(1)), nixexpr.Blank, nixexpr.Binding{Path: []string{"x", "y.z"}, Value: nixexpr.Raw("lib.mkForce 2")}},
			"{\n  a.b = 1;\n\n  x.\"y.z\" = lib.mkForce 2;\n}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := nixexpr.Format(tt.v, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestFormatReportsUnrepresentable(t *testing.T) {
	t.Parallel()
	_, err := nixexpr.Format(nixexpr.Attrs{"a": nixexpr.List{nixexpr.String("x\x00")}}, 0)
	if !errors.Is(err, nixexpr.ErrNotRepresentable) {
		t.Fatalf("err = %v", err)
	}
	_, err = nixexpr.Format(nixexpr.Set{nixexpr.Bind("a", nixexpr.Call{Fn: "lib.mkForce", Arg: nixexpr.String("x\x00")})}, 0)
	if !errors.Is(err, nixexpr.ErrNotRepresentable) {
		t.Fatalf("call: err = %v", err)
	}
	if _, err := nixexpr.Marshal(map[string]any{"f": 1.5}); !errors.Is(err, nixexpr.ErrNotRepresentable) {
		t.Fatalf("float: err = %v", err)
	}
}

// nixEval evaluates expr with real Nix and returns its JSON.
func nixEval(t *testing.T, expr string) []byte {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "nix-instantiate", "--eval", "--strict", "--json", "-E", expr)
	cmd.Env = nixrunner.Environ(nil, nixrunner.OfflineConfig)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate (install Debian's nix-bin): %v\n%s", err, stderr.String())
	}
	return out
}

// randomString makes strings dense in the characters Nix's lexer treats specially.
func randomString(r *rand.Rand) string {
	alphabet := []string{"$", "{", "}", `"`, `\`, "'", "\n", "\r", "\t", "a", " ", "é", "🙂", "\x01", "#", "/", "*"}
	var b strings.Builder
	for range r.IntN(12) {
		b.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

// TestRealNixReadsBackEveryString evaluates thousands of strings, as values and as attribute names,
// with real Nix in one call, and compares what Nix read with what was written.
func TestRealNixReadsBackEveryString(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(2, 8))
	in := append([]string(nil), tricky...)
	for range 3000 {
		in = append(in, randomString(r))
	}
	var values nixexpr.List
	names := nixexpr.Attrs{}
	for i, s := range in {
		values = append(values, nixexpr.String(s))
		names[s] = nixexpr.Int(i)
	}
	src, err := nixexpr.Format(nixexpr.Attrs{"values": values, "names": names, "ints": nixexpr.List{nixexpr.Int(-1), nixexpr.Int(math.MaxInt64), nixexpr.Int(math.MinInt64)}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Values []string
		Names  map[string]int
		Ints   []int64
	}
	if err := json.Unmarshal(nixEval(t, src), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Values) != len(in) {
		t.Fatalf("got %d values, want %d", len(got.Values), len(in))
	}
	for i, s := range in {
		if got.Values[i] != s {
			t.Errorf("string %q came back as %q (written %s)", s, got.Values[i], must(nixexpr.Quote(s)))
		}
		if idx, ok := got.Names[s]; !ok || in[idx] != s {
			t.Errorf("attribute name %q did not come back", s)
		}
	}
	if fmt.Sprint(got.Ints) != fmt.Sprint([]int64{-1, math.MaxInt64, math.MinInt64}) {
		t.Errorf("ints came back as %v", got.Ints)
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// unquote reads a Nix double-quoted string literal the way Nix's lexer does (nix/src/libexpr/lexer.l):
// it fails on an unescaped `${` (an interpolation) or `"` before the end, and undoes escapes.
func unquote(lit string) (string, error) {
	if len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return "", errors.New("not a string literal")
	}
	body := lit[1 : len(lit)-1]
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '\\':
			if i+1 == len(body) {
				return "", errors.New("escape at the end")
			}
			i++
			switch body[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(body[i])
			}
		case c == '"':
			return "", fmt.Errorf("unescaped quote at %d", i)
		case c == '$' && i+1 < len(body) && body[i+1] == '{':
			return "", fmt.Errorf("interpolation at %d", i)
		case c == '$' && i+1 < len(body) && body[i+1] == '$':
			b.WriteString("$$") // `$$` is literal, and so is whatever follows
			i++
		case c == '\r':
			return "", errors.New("raw carriage return (Nix normalises it)")
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func FuzzQuote(f *testing.F) {
	for _, s := range tricky {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := nixexpr.Quote(s)
		if err != nil {
			if !strings.Contains(s, "\x00") && isUTF8(s) {
				t.Fatalf("Quote(%q) refused a representable string: %v", s, err)
			}
			return
		}
		back, err := unquote(q)
		if err != nil {
			t.Fatalf("Quote(%q) = %s, which Nix reads wrongly: %v", s, q, err)
		}
		if back != s {
			t.Fatalf("Quote(%q) = %s reads back as %q", s, q, back)
		}
	})
}

func isUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// randomValue builds a JSON-shaped value of strings, integers, booleans, nulls, lists and objects.
func randomValue(r *rand.Rand, depth int) any {
	switch k := r.IntN(7); {
	case depth > 3 || k == 0:
		return randomString(r)
	case k == 1:
		return json.Number(fmt.Sprint(r.Int64() - math.MaxInt64/2))
	case k == 2:
		return r.IntN(2) == 0
	case k == 3:
		return nil
	case k == 4:
		l := []any{}
		for range r.IntN(4) {
			l = append(l, randomValue(r, depth+1))
		}
		return l
	default:
		m := map[string]any{}
		for range r.IntN(4) {
			m[randomString(r)] = randomValue(r, depth+1)
		}
		return m
	}
}

// TestRealNixEvaluatesMarshalledValues: random nested values, printed as Nix and evaluated by real Nix,
// come back equal to the input.
func TestRealNixEvaluatesMarshalledValues(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 7))
	var in []any
	for range 500 {
		in = append(in, randomValue(r, 0))
	}
	v, err := nixexpr.FromJSON(in)
	if err != nil {
		t.Fatal(err)
	}
	src, err := nixexpr.Format(v, 0)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(in)
	var a, b any
	json.Unmarshal(want, &a)
	json.Unmarshal(nixEval(t, src), &b)
	wantJSON, _ := json.Marshal(a)
	gotJSON, _ := json.Marshal(b)
	if !bytes.Equal(wantJSON, gotJSON) {
		t.Fatalf("Nix evaluated a different value:\n got %.400s\nwant %.400s", gotJSON, wantJSON)
	}
}
