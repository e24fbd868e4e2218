package checkout

import (
	"fmt"
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

// rev is a parsed revision: exactly one of commit and ref is set.
type rev struct {
	commit string // 40 lowercase hex digits
	ref    string // a full ref name: refs/heads/x, refs/tags/x or refs/pull/N/{head,merge}
}

func (r rev) String() string {
	if r.commit != "" {
		return r.commit
	}
	return r.ref
}

// ValidateRev checks a revision the way Checkout and Resolve do, without touching git. A revision is
// one of:
//   - a full commit id: 40 hex digits (abbreviated ids are refused: they are ambiguous and cannot be
//     fetched);
//   - a branch name ("main", "release/1.2"), meaning refs/heads/<name>;
//   - a full ref name under refs/heads/, refs/tags/ or refs/pull/<N>/head (or /merge).
//
// Ref names follow git check-ref-format: no "..", "//", "@{", control characters, space or any of
// ~^:?*[\, no component starting with "." or ending with ".lock", not ending with "/" or ".". A
// revision must not start with "-". A string of 7 to 39 (or more than 40) hex digits is taken for
// an abbreviated commit id and refused; name such a branch refs/heads/<name>. The error is a *RevError.
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
	}
	if isHex(s) {
		switch {
		case len(s) == 40:
			return rev{commit: strings.ToLower(s)}, nil
		case len(s) == 64:
			return bad("SHA-256 object ids are not supported")
		case len(s) > 40:
			return bad("%d hex digits: a commit id has 40", len(s))
		case len(s) >= 7:
			return bad("looks like an abbreviated commit id (%d hex digits): give all 40 hex digits, or refs/heads/%s for a branch", len(s), s)
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
		if s == "HEAD" || s == "@" {
			return bad("name a branch, tag or commit, not %s", s)
		}
		name = "refs/heads/" + s
	}
	if reason := refFormatProblem(name); reason != "" {
		return bad("%s", reason)
	}
	return rev{ref: name}, nil
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
