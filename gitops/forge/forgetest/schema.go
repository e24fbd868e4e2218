package forgetest

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// operation is one method on one path of the OpenAPI fragments.
type operation struct {
	Method      string
	Template    string
	OperationID string
	pattern     *regexp.Regexp
	params      []string
	body        map[string]any // request body schema, nil when the operation takes none
	bodyNeeded  bool
}

// fragments is the subset of an OpenAPI 3 document that testdata/openapi-fragments.json holds.
type fragments struct {
	Paths map[string]map[string]struct {
		OperationID string `json:"operationId"`
		RequestBody *struct {
			Required bool `json:"required"`
			Content  map[string]struct {
				Schema map[string]any `json:"schema"`
			} `json:"content"`
		} `json:"requestBody"`
	} `json:"paths"`
}

// loadOperations reads the fragments into operations with a matcher for their path. A path parameter
// matches one segment, except one marked x-multi-segment in the description (the statuses {sha}).
func loadOperations(data []byte) ([]operation, error) {
	var f fragments
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("forgetest: decode OpenAPI fragments: %w", err)
	}
	var ops []operation
	for tmpl, methods := range f.Paths {
		var names []string
		var expr strings.Builder
		expr.WriteString("^")
		for _, seg := range strings.Split(strings.TrimPrefix(tmpl, "/"), "/") {
			expr.WriteString("/")
			if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
				name := strings.Trim(seg, "{}")
				names = append(names, name)
				if name == "sha" { // x-multi-segment in the description
					expr.WriteString("(.+)")
				} else {
					expr.WriteString("([^/]+)")
				}
				continue
			}
			expr.WriteString(regexp.QuoteMeta(seg))
		}
		expr.WriteString("$")
		for method, op := range methods {
			o := operation{Method: strings.ToUpper(method), Template: tmpl, OperationID: op.OperationID, pattern: regexp.MustCompile(expr.String()), params: names}
			if op.RequestBody != nil {
				o.bodyNeeded = op.RequestBody.Required
				if c, ok := op.RequestBody.Content["application/json"]; ok {
					o.body = c.Schema
				}
			}
			ops = append(ops, o)
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].Template < ops[j].Template })
	return ops, nil
}

// match returns the operation for method and path and its path parameters; found reports whether the
// path exists with another method.
func match(ops []operation, method, path string) (op *operation, params map[string]string, pathExists bool) {
	for i := range ops {
		m := ops[i].pattern.FindStringSubmatch(path)
		if m == nil {
			continue
		}
		pathExists = true
		if ops[i].Method != method {
			continue
		}
		params = map[string]string{}
		for j, name := range ops[i].params {
			params[name] = m[j+1]
		}
		return &ops[i], params, true
	}
	return nil, nil, pathExists
}

// fieldError is one validation failure, shaped like an entry of GitHub's 422 "errors" list
// (https://docs.github.com/rest/using-the-rest-api/troubleshooting-the-rest-api).
type fieldError struct {
	Field   string `json:"field"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e fieldError) String() string { return e.Field + ": " + e.Message }

// validate checks v against schema, the OpenAPI 3.0 subset the fragments use: type, nullable, enum,
// required, properties, additionalProperties, items, maxItems, maxLength, format date-time, oneOf and
// anyOf. Unknown fields are accepted unless the schema says additionalProperties: false, as OpenAPI
// does.
func validate(schema map[string]any, v any, at string) []fieldError {
	if schema == nil {
		return nil
	}
	var errs []fieldError
	fail := func(code, format string, args ...any) {
		errs = append(errs, fieldError{Field: at, Code: code, Message: fmt.Sprintf(format, args...)})
	}
	if v == nil {
		if nullable, _ := schema["nullable"].(bool); !nullable && schema["type"] != nil {
			fail("invalid", "null is not allowed")
		}
		return errs
	}
	if typ, ok := schema["type"].(string); ok && !hasType(v, typ) {
		fail("invalid", "is %s, want %s", jsonType(v), typ)
		return errs
	}
	if enum, ok := schema["enum"].([]any); ok && !slices.Contains(enum, v) {
		fail("invalid", "%v is not one of %v", v, enum)
	}
	if s, ok := v.(string); ok {
		if max, ok := schema["maxLength"].(float64); ok && utf8.RuneCountInString(s) > int(max) {
			fail("custom", "is too long (maximum is %d characters)", int(max))
		}
		if schema["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339, s); err != nil {
				fail("invalid", "%q is not an ISO 8601 date-time", s)
			}
		}
	}
	if obj, ok := v.(map[string]any); ok {
		props, _ := schema["properties"].(map[string]any)
		if req, ok := schema["required"].([]any); ok {
			for _, r := range req {
				if _, present := obj[r.(string)]; !present {
					errs = append(errs, fieldError{Field: join(at, r.(string)), Code: "missing_field", Message: "is required"})
				}
			}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ps, known := props[k].(map[string]any)
			if !known {
				if ap, ok := schema["additionalProperties"].(bool); ok && !ap {
					errs = append(errs, fieldError{Field: join(at, k), Code: "invalid", Message: "is not a known field"})
				}
				continue
			}
			errs = append(errs, validate(ps, obj[k], join(at, k))...)
		}
	}
	if arr, ok := v.([]any); ok {
		if max, ok := schema["maxItems"].(float64); ok && len(arr) > int(max) {
			fail("custom", "has %d items (maximum is %d)", len(arr), int(max))
		}
		if items, ok := schema["items"].(map[string]any); ok {
			for i, e := range arr {
				errs = append(errs, validate(items, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	if alts, ok := schema["oneOf"].([]any); ok {
		n := 0
		for _, a := range alts {
			if len(validate(a.(map[string]any), v, at)) == 0 {
				n++
			}
		}
		if n != 1 {
			fail("invalid", "matches %d of the %d alternatives of oneOf, want exactly 1", n, len(alts))
		}
	}
	if alts, ok := schema["anyOf"].([]any); ok {
		n := 0
		for _, a := range alts {
			if len(validate(a.(map[string]any), v, at)) == 0 {
				n++
			}
		}
		if n == 0 {
			fail("invalid", "matches none of the alternatives of anyOf")
		}
	}
	return errs
}

func join(at, field string) string {
	if at == "" {
		return field
	}
	return at + "." + field
}

func hasType(v any, typ string) bool {
	switch typ {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	case "number":
		_, ok := v.(float64)
		return ok
	}
	return true
}

func jsonType(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64:
		return "number"
	}
	return fmt.Sprintf("%T", v)
}
