package main

import (
	"os"
	"testing"

	"github.com/cimdeploy/cimdeploy/nixrunner/nixtest"
)

// execMain makes the test binary run cimdeploy's main instead of the tests: a test that needs
// cimdeploy as a process of its own (kill -9 of serve) starts the binary again with it set.
const execMain = "CIMDEPLOY_TEST_EXEC_MAIN"

// TestMain runs the package's tests once per Nix version (nixtest: Debian's and .ci/nix-trixie's); the
// serve, status, node removal and recreation lab tests, whose nix calls the history test already makes
// (what they add is SSH, pct and NATS), and the first deploy and the lab commands, which the history
// test's deploys of commit after commit cover, run with the first only.
func TestMain(m *testing.M) {
	if os.Getenv(execMain) == "1" {
		main()
	}
	os.Exit(nixtest.Main(m.Run, "-test.skip=^(TestServe|TestStatusOnLab|TestRolloutRemovesANodeOnLab|TestRolloutRecreatesANodeOnLab|TestDeployToLab|TestLabCommands)"))
}
