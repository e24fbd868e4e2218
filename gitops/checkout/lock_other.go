//go:build !unix

package checkout

import (
	"context"
	"errors"
	"fmt"
)

func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	return nil, fmt.Errorf("checkout: lock %s: %w", path, errors.ErrUnsupported)
}
