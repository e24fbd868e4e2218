package checkout_test

import (
	"os"
	"testing"

	"github.com/cimdeploy/cimdeploy/nixrunner/nixtest"
)

// TestMain runs the package's tests with Debian's Nix, and the one that runs nix with the other
// versions too (nixtest: .ci/nix-trixie's).
func TestMain(m *testing.M) { os.Exit(nixtest.Main(m.Run, "-test.run=^TestNixSeesRev$")) }
