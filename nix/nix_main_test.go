package nix

import (
	"os"
	"testing"

	"github.com/cimdeploy/cimdeploy/nixrunner/nixtest"
)

// TestMain runs the package's tests once per Nix version (nixtest: Debian's and .ci/nix-trixie's).
func TestMain(m *testing.M) { os.Exit(nixtest.Main(m.Run)) }
