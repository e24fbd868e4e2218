package checkout

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	err := redact(fmt.Errorf("fetch https://x-access-token:s3cr3t@host/r: %w", fs.ErrPermission), "s3cr3t")
	if got, want := err.Error(), "fetch https://x-access-token:***@host/r: permission denied"; got != want {
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
