package projection_test

import (
	"os"
	"testing"

	"github.com/cimdeploy/cimdeploy/nixrunner/nixtest"
)

// TestMain runs the package's tests once per Nix version (nixtest: Debian's and .ci/nix-trixie's).
// With the second Nix, the secured fleet's build stands for the plain one's (the same modules and more).
func TestMain(m *testing.M) { os.Exit(nixtest.Main(m.Run, "-test.skip=^TestFleetBuilds$")) }
