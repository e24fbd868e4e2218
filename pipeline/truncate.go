package pipeline

import (
	"fmt"
	"unicode/utf8"
)

// Bounds on what a run records. A commit is hostile input: a value it carries (a 700 KB node name, a
// file's content read as drift) may be echoed into an error, and every error, result and event of a run
// is kept in the run history. These bounds keep one run's record far below the store's payload limit
// (NATS max_payload, 1 MiB by default) for any sane number of nodes; the store shortens what still does
// not fit (see pipeline/store).
const (
	// MaxErrorBytes bounds the error message of a step, a stage and a run.
	MaxErrorBytes = 8 << 10
	// MaxLastLines bounds how many of a failed command's last lines a step keeps, MaxLineBytes each:
	// a bound on what a stage reports (nixrunner keeps its own 20 and the error line before them);
	// a step's own output keeps its last tailLines.
	MaxLastLines = 50
	MaxLineBytes = 1 << 10
	// MaxDriftBytes bounds the drift diff a run's result carries (Run.Drift).
	MaxDriftBytes = 64 << 10
	// MaxNoteBytes bounds a step's note.
	MaxNoteBytes = 256
)

// tailLines is how many lines of a step's output become its LastLines when its error carries none.
const tailLines = 20

// Truncate returns s when it is at most max bytes long. A longer s is cut to a prefix, at a UTF-8
// character boundary, followed by a marker that says how long s was and how much is gone:
//
//	"nats-aaaaaaaa… [truncated: 716750 of 716800 bytes cut]"
//
// The result is at most max bytes, marker included, when max leaves room for the marker (about 50
// bytes); a smaller max yields the marker alone. The marker is for people: nothing parses it.
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	keep := max - len(truncMarker(len(s), len(s)))
	if keep <= 0 {
		return truncMarker(len(s), len(s))
	}
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + truncMarker(len(s)-keep, len(s))
}

func truncMarker(cut, total int) string {
	return fmt.Sprintf("… [truncated: %d of %d bytes cut]", cut, total)
}

// truncateLines bounds lines to the last max of them, each to MaxLineBytes; it returns a copy.
func truncateLines(lines []string, max int) []string {
	if len(lines) == 0 {
		return nil
	}
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = Truncate(l, MaxLineBytes)
	}
	return out
}
