package rollouttest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nkeys"
)

// SystemNkeyFile writes a new user nkey seed to a 0600 file in a temporary directory of tb and
// returns its path: what CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE names for a topology with accounts.
func SystemNkeyFile(tb testing.TB) string {
	tb.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		tb.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "system.nk")
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
