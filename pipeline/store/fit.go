package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// payloadHeadroom is what a message keeps free below the connection's max payload for its headers
// (Nats-Msg-Id, Nats-Expected-Stream, the KV headers): NATS counts headers and data against the limit.
const payloadHeadroom = 4 << 10

// minField is the length fit never cuts a string below: a marker plus the start of the value.
const minField = 128

// fit returns data, a JSON document, shortened to at most limit bytes: the longest strings are cut
// first, each keeping its start and a marker that says how long it was (pipeline.Truncate); when the
// strings are all short and it still does not fit, the longest arrays keep their first elements. What
// fit returns is still valid JSON of the same shape, so it decodes as the original type did. cut says
// what was shortened (JSON paths), empty when data already fit.
func fit(data []byte, limit int) (out []byte, cut []string, err error) {
	if len(data) <= limit {
		return data, nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // numbers stay as they were written
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("shorten: %w", err)
	}
	size := len(data)
	for size > limit {
		leaves := collect(doc, "", func(v any) { doc = v }, nil)
		sort.SliceStable(leaves, func(i, j int) bool { return leaves[i].size > leaves[j].size })
		excess := size - limit
		// Strings first: every string longer than a bound is cut to it, the bound chosen as high as
		// possible while the cuts still remove what is too much (water filling over the lengths).
		shortened := false
		if bound, ok := cutBound(leaves, excess); ok {
			for _, l := range leaves {
				if s, ok := l.value.(string); ok && len(s) > bound {
					l.set(pipeline.Truncate(s, bound))
					cut = append(cut, fmt.Sprintf("%s (%d bytes)", l.path, len(s)))
					shortened = true
				}
			}
		}
		if !shortened {
			// Then lists: the longest keeps its first half.
			for _, l := range leaves {
				list, ok := l.value.([]any)
				if !ok || len(list) < 2 {
					continue
				}
				l.set(list[:len(list)/2])
				cut = append(cut, fmt.Sprintf("%s (%d of %d elements)", l.path, len(list)-len(list)/2, len(list)))
				shortened = true
				break
			}
		}
		if !shortened {
			return nil, cut, fmt.Errorf("shorten: %d bytes of fields too short to cut, limit %d", size, limit)
		}
		if out, err = json.Marshal(doc); err != nil {
			return nil, cut, fmt.Errorf("shorten: %w", err)
		}
		size = len(out)
	}
	return out, cut, nil
}

// cutBound is the largest length such that cutting every string of leaves (sorted longest first) down
// to it removes at least excess bytes; ok is false when even cutting to minField is not enough and
// nothing is longer than minField.
func cutBound(leaves []leaf, excess int) (int, bool) {
	var lens []int
	for _, l := range leaves {
		if s, ok := l.value.(string); ok && len(s) > minField {
			lens = append(lens, len(s))
		}
	}
	if len(lens) == 0 {
		return 0, false
	}
	sum := 0
	for k, n := range lens {
		sum += n
		next := minField
		if k+1 < len(lens) {
			next = max(minField, lens[k+1])
		}
		if sum-(k+1)*next >= excess {
			return max(minField, (sum-excess)/(k+1)), true
		}
	}
	return minField, true
}

// leaf is a string or an array inside a decoded JSON document, with the way to replace it.
type leaf struct {
	path  string
	size  int // bytes of the string, or of the encoded array
	value any
	set   func(any)
}

// collect lists the strings and arrays in v (a decoded JSON value at path, replaced by set).
func collect(v any, path string, set func(any), out []leaf) []leaf {
	switch v := v.(type) {
	case string:
		out = append(out, leaf{path: path, size: len(v), value: v, set: set})
	case []any:
		out = append(out, leaf{path: path, size: encodedSize(v), value: v, set: set})
		for i, child := range v {
			out = collect(child, fmt.Sprintf("%s[%d]", path, i), func(x any) { v[i] = x }, out)
		}
	case map[string]any:
		for k, child := range v {
			p := k
			if path != "" {
				p = path + "." + k
			}
			out = collect(child, p, func(x any) { v[k] = x }, out)
		}
	}
	return out
}

func encodedSize(v any) int {
	b, _ := json.Marshal(v)
	return len(b)
}
