package events

// maxNesting is encoding/json's limit on nesting (maxNestingDepth): json.Valid refuses deeper values.
const maxNesting = 10000

// valid is json.Valid(data): one JSON value (RFC 8259), with white space around it, nested at most
// maxNesting levels. It reads each byte once, without encoding/json's scanner, which calls a function
// for each byte.
func valid(data []byte) bool {
	v := validator{data: data}
	v.space()
	if !v.value(0) {
		return false
	}
	v.space()
	return v.i == len(v.data)
}

type validator struct {
	data []byte
	i    int
}

func (v *validator) space() {
	for v.i < len(v.data) {
		switch v.data[v.i] {
		case ' ', '\t', '\r', '\n':
			v.i++
		default:
			return
		}
	}
}

// next is the byte at v.i, or 0 at the end.
func (v *validator) next() byte {
	if v.i < len(v.data) {
		return v.data[v.i]
	}
	return 0
}

func (v *validator) value(depth int) bool {
	switch c := v.next(); {
	case c == '{':
		if depth++; depth > maxNesting {
			return false
		}
		v.i++
		v.space()
		if v.next() == '}' {
			v.i++
			return true
		}
		for {
			if v.next() != '"' || !v.str() {
				return false
			}
			v.space()
			if v.next() != ':' {
				return false
			}
			v.i++
			v.space()
			if !v.value(depth) {
				return false
			}
			v.space()
			switch v.next() {
			case ',':
				v.i++
				v.space()
			case '}':
				v.i++
				return true
			default:
				return false
			}
		}
	case c == '[':
		if depth++; depth > maxNesting {
			return false
		}
		v.i++
		v.space()
		if v.next() == ']' {
			v.i++
			return true
		}
		for {
			if !v.value(depth) {
				return false
			}
			v.space()
			switch v.next() {
			case ',':
				v.i++
				v.space()
			case ']':
				v.i++
				return true
			default:
				return false
			}
		}
	case c == '"':
		return v.str()
	case c == '-' || '0' <= c && c <= '9':
		return v.number()
	case c == 't':
		return v.word("true")
	case c == 'f':
		return v.word("false")
	case c == 'n':
		return v.word("null")
	}
	return false
}

func (v *validator) word(w string) bool {
	if len(v.data)-v.i < len(w) || string(v.data[v.i:v.i+len(w)]) != w {
		return false
	}
	v.i += len(w)
	return true
}

// str checks the string at v.i (its opening quote).
func (v *validator) str() bool {
	v.i++
	for v.i < len(v.data) {
		c := v.data[v.i]
		switch {
		case c == '"':
			v.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			v.i++
			if v.i >= len(v.data) {
				return false
			}
			switch v.data[v.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				v.i++
			case 'u':
				if len(v.data)-v.i < 5 {
					return false
				}
				for _, h := range v.data[v.i+1 : v.i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				v.i += 5
			default:
				return false
			}
		default:
			v.i++
		}
	}
	return false
}

// number checks the number at v.i: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func (v *validator) number() bool {
	if v.next() == '-' {
		v.i++
	}
	switch c := v.next(); {
	case c == '0':
		v.i++
	case '1' <= c && c <= '9':
		v.digits()
	default:
		return false
	}
	if v.next() == '.' {
		v.i++
		if !v.digits() {
			return false
		}
	}
	if c := v.next(); c == 'e' || c == 'E' {
		v.i++
		if c := v.next(); c == '+' || c == '-' {
			v.i++
		}
		if !v.digits() {
			return false
		}
	}
	return true
}

// digits skips one or more digits, reporting whether there was one.
func (v *validator) digits() bool {
	start := v.i
	for v.i < len(v.data) && '0' <= v.data[v.i] && v.data[v.i] <= '9' {
		v.i++
	}
	return v.i > start
}
