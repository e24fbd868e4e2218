package checkout

import (
	"fmt"
	"strconv"
	"strings"
)

// RevError reports a revision that is not a full commit id nor an acceptable ref name. It is returned
// before anything touches git, so a bad revision from a webhook or a flag never reaches a git command.
type RevError struct {
	Rev    string // the revision as given
	Reason string // what is wrong with it
}

func (e *RevError) Error() string {
	return fmt.Sprintf("checkout: invalid revision %q: %s", e.Rev, e.Reason)
}

// rev is a parsed revision: exactly one of commit, ref and expr is set.
type rev struct {
	commit string   // 40 lowercase hex digits
	ref    string   // a full ref name: refs/heads/x, refs/tags/x or refs/pull/N/{head,merge}
	expr   *revExpr // what an operator types for a commit: HEAD~1, main^, v1.2^{}, an abbreviated id
}

func (r rev) String() string {
	switch {
	case r.commit != "":
		return r.commit
	case r.expr != nil:
		return r.expr.text
	}
	return r.ref
}

// revExpr is a revision resolved against the cached clone (see Cache.Resolve): a base, then the
// steps from it to the commit.
type revExpr struct {
	text string // as given
	// The base is one of: the remote's HEAD (head), an abbreviated commit id of 7 to 39 hex digits
	// (prefix, lowercase), a full commit id (commit) or a branch or tag name (name, without refs/).
	head                 bool
	prefix, commit, name string
	steps                []revStep
}

// revStep is one suffix of a revision: ~n (the n-th first-parent ancestor), ^n (the n-th parent, ^0
// the commit itself) or ^{} and ^{commit} (peel to the commit: op 'p').
type revStep struct {
	op byte // '~', '^' or 'p'
	n  int
}

// Bounds of a revision expression, so that a revision never makes an unbounded walk.
const (
	maxRevSteps = 16     // suffixes
	maxRevCount = 100000 // the n of ~n and ^n
)

// ValidateRev checks a revision the way Checkout and Resolve do, without touching git. A revision is
// one of:
//   - a full commit id: 40 hex digits;
//   - a branch name ("main", "release/1.2"), meaning refs/heads/<name>;
//   - a full ref name under refs/heads/, refs/tags/ or refs/pull/<N>/head (or /merge), taken as it
//     is: no suffixes (refs come this way from webhooks and the queue);
//   - what git takes for a commit, as operators type it (gitrevisions(7)): an abbreviated commit id
//     of 7 to 39 hex digits, HEAD (the remote's default branch), or a branch, tag, HEAD or commit id
//     followed by suffixes ~, ~<n>, ^, ^<n>, ^{} and ^{commit}, at most 16 of them with n at most
//     100000: "HEAD~1", "main^", "v1.2^{}", "1a2b3c4~2". A name with suffixes is looked up among
//     both branches and tags and must name exactly one of them.
//
// Ref names follow git check-ref-format: no "..", "//", "@{", control characters, space or any of
// ~^:?*[\, no component starting with "." or ending with ".lock", not ending with "/" or ".". A
// revision must not start with "-". A string of 7 to 39 hex digits is an abbreviated commit id, never
// a branch: name such a branch refs/heads/<name>. Other suffixes (^{tree}, ^{/text}, @{...}, :path,
// ^!, ^@) are refused. The error is a *RevError.
func ValidateRev(s string) error {
	_, err := parseRev(s)
	return err
}

func parseRev(s string) (rev, error) {
	bad := func(format string, args ...any) (rev, error) {
		return rev{}, &RevError{Rev: s, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case s == "":
		return bad("empty revision")
	case strings.HasPrefix(s, "-"):
		return bad("must not begin with '-'")
	case len(s) > maxRefLen:
		return bad("longer than %d bytes", maxRefLen)
	}
	if !strings.HasPrefix(s, "refs/") {
		if i := strings.IndexAny(s, "~^"); i >= 0 || s == "HEAD" || (isHex(s) && len(s) >= 7 && len(s) < 40) {
			if i < 0 {
				i = len(s)
			}
			e, reason := parseExpr(s, s[:i], s[i:])
			if reason != "" {
				return bad("%s", reason)
			}
			return rev{expr: e}, nil
		}
	}
	if isHex(s) {
		switch {
		case len(s) == 40:
			return rev{commit: strings.ToLower(s)}, nil
		case len(s) == 64:
			return bad("SHA-256 object ids are not supported")
		case len(s) > 40:
			return bad("%d hex digits: a commit id has 40", len(s))
		}
	}
	if len(s) == 40 && isAlnum(s) {
		i := strings.IndexFunc(s, func(r rune) bool { return !isHexDigit(byte(r)) })
		return bad("not a commit id: %q at position %d is not a hex digit", s[i], i+1)
	}

	name := s
	if strings.HasPrefix(s, "refs/") {
		if reason := refNamespaceProblem(s); reason != "" {
			return bad("%s", reason)
		}
	} else {
		if s == "@" {
			return bad("name a branch, tag or commit, not %s", s)
		}
		name = "refs/heads/" + s
	}
	if reason := refFormatProblem(name); reason != "" {
		return bad("%s", reason)
	}
	return rev{ref: name}, nil
}

// maxRefLen bounds a revision (git itself has no limit; GitHub's refs stay far below).
const maxRefLen = 1024

// parseExpr parses a base and its suffixes; it returns the reason when they are not acceptable.
func parseExpr(text, base, suffix string) (*revExpr, string) {
	e := &revExpr{text: text}
	switch {
	case base == "":
		return nil, "a suffix needs a branch, tag, HEAD or commit id before it"
	case base == "HEAD":
		e.head = true
	case isHex(base) && len(base) == 40:
		e.commit = strings.ToLower(base)
	case isHex(base) && len(base) >= 7 && len(base) < 40:
		e.prefix = strings.ToLower(base)
	case isHex(base) && len(base) > 40:
		return nil, fmt.Sprintf("%d hex digits: a commit id has 40", len(base))
	default:
		if base == "@" {
			return nil, "name a branch, tag or commit, not @"
		}
		if reason := refFormatProblem("refs/heads/" + base); reason != "" {
			return nil, reason
		}
		e.name = base
	}
	for suffix != "" {
		if len(e.steps) == maxRevSteps {
			return nil, fmt.Sprintf("more than %d suffixes", maxRevSteps)
		}
		op := suffix[0]
		suffix = suffix[1:]
		if op != '~' && op != '^' {
			return nil, fmt.Sprintf("must not contain %q after a suffix (only ~, ~<n>, ^, ^<n>, ^{} and ^{commit})", op)
		}
		if op == '^' && strings.HasPrefix(suffix, "{") {
			end := strings.IndexByte(suffix, '}')
			if end < 0 {
				return nil, "unclosed ^{"
			}
			if kind := suffix[1:end]; kind != "" && kind != "commit" {
				return nil, fmt.Sprintf("^{%s}: only ^{} and ^{commit} name a commit", kind)
			}
			e.steps = append(e.steps, revStep{op: 'p'})
			suffix = suffix[end+1:]
			continue
		}
		digits := len(suffix) - len(strings.TrimLeft(suffix, "0123456789"))
		n := 1
		if digits > 0 {
			if digits > 6 {
				return nil, fmt.Sprintf("%c%s: at most %d", op, suffix[:digits], maxRevCount)
			}
			n, _ = strconv.Atoi(suffix[:digits])
			if n > maxRevCount {
				return nil, fmt.Sprintf("%c%d: at most %d", op, n, maxRevCount)
			}
			suffix = suffix[digits:]
		}
		e.steps = append(e.steps, revStep{op: op, n: n})
	}
	return e, ""
}

// refNamespaceProblem allows the refs a deployment can be asked for: branches, tags and the pull
// request refs GitHub publishes.
func refNamespaceProblem(name string) string {
	for _, p := range []string{"refs/heads/", "refs/tags/"} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			if rest == "" {
				return "missing name after " + p
			}
			return ""
		}
	}
	if rest, ok := strings.CutPrefix(name, "refs/pull/"); ok {
		n, kind, ok := strings.Cut(rest, "/")
		if !ok || n == "" || strings.Trim(n, "0123456789") != "" || (kind != "head" && kind != "merge") {
			return "pull request refs must be refs/pull/<number>/head or refs/pull/<number>/merge"
		}
		return ""
	}
	return "only refs/heads/, refs/tags/ and refs/pull/<number>/head refs can be checked out"
}

// refFormatProblem applies the rules of git check-ref-format to a full ref name and says what is
// wrong, or "" when nothing is.
func refFormatProblem(name string) string {
	switch {
	case strings.HasSuffix(name, "/"):
		return "must not end with '/'"
	case strings.HasSuffix(name, "."):
		return "must not end with '.'"
	case strings.Contains(name, ".."):
		return "must not contain '..'"
	case strings.Contains(name, "//"):
		return "must not contain '//'"
	case strings.Contains(name, "@{"):
		return "must not contain '@{'"
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < 0x20 || c == 0x7f {
			return fmt.Sprintf("must not contain control character %q (byte %d)", c, i+1)
		}
		if strings.IndexByte(" ~^:?*[\\", c) >= 0 {
			return fmt.Sprintf("must not contain %q", c)
		}
	}
	for comp := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(comp, ".") {
			return fmt.Sprintf("component %q must not begin with '.'", comp)
		}
		if strings.HasSuffix(comp, ".lock") {
			return fmt.Sprintf("component %q must not end with '.lock'", comp)
		}
	}
	return ""
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// IsExpression reports whether rev is valid and names its commit by where it is now (HEAD~1, main^,
// v1.2^{}, an abbreviated id) rather than by a ref or a full id: a caller resolves it once
// (Cache.Resolve) and works on the full commit id from then on.
func IsExpression(rev string) bool {
	r, err := parseRev(rev)
	return err == nil && r.expr != nil
}
