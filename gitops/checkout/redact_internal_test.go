package checkout

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	err := redact(fmt.Errorf("fetch https://x-access-token:s3cr3t@host/r: %w", fs.ErrPermission), "s3cr3t")
	if got, want := err.Error(), "fetch https://***@host/r: permission denied"; got != want {
		t.Errorf("redacted = %q, want %q", got, want)
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Error("redaction lost the wrapped error")
	}
	plain := errors.New("no secret here")
	if redact(plain, "s3cr3t") != plain || redact(plain, "") != plain || redact(nil, "s3cr3t") != nil {
		t.Error("redact changed an error without the secret")
	}
}

func TestRedactURLs(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{in: "https://user:tok3n@github.com/o/r.git", want: "https://***@github.com/o/r.git"},
		{in: "https://ghp_tok3n@github.com/o/r.git", want: "https://***@github.com/o/r.git"},
		{in: `fetch "http://a:b@127.0.0.1:8080/r": refused, then https://c@d/e`, want: `fetch "http://***@127.0.0.1:8080/r": refused, then https://***@d/e`},
		{in: "ssh://git:tok3n@host/r.git", want: "ssh://git:***@host/r.git"},
		{in: "ssh://git@host/r.git", want: "ssh://git@host/r.git"},
		{in: "git@github.com:o/r.git", want: "git@github.com:o/r.git"},
		{in: "https://github.com/o/r.git by dev@example.com", want: "https://github.com/o/r.git by dev@example.com"},
	}
	for _, tt := range tests {
		if got := RedactURLs(tt.in); got != tt.want {
			t.Errorf("RedactURLs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, src := range []Source{{URL: "https://user:tok3n@github.com/o/r.git"}, {URL: "ssh://git:tok3n@github.com/o/r.git", SSHKeyFile: "/k"}} {
		err := src.Validate()
		for _, s := range []string{fmt.Sprint(err), src.String(), fmt.Sprintf("%#v", src)} {
			if err == nil || strings.Contains(s, "tok3n") {
				t.Errorf("%q shows the secret (Validate: %v)", s, err)
			}
		}
	}
}
