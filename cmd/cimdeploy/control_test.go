package main

import (
	"strings"
	"testing"
)

// TestControlCommands: pause and resume change the state every serve instance reads; approve and
// reject name what they refuse (a run that does not exist) and reject needs a reason.
func TestControlCommands(t *testing.T) {
	t.Parallel()
	data := []string{"--data-dir", t.TempDir()}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"pause", "--reason", "change freeze"}, exitOK, "deploys paused"},
		{[]string{"resume"}, exitOK, "deploys resumed"},
		{[]string{"approve", "20261203T120000Z-0000beef"}, exitFailed, "20261203T120000Z-0000beef"},
		{[]string{"reject", "20261203T120000Z-0000beef"}, exitUsage, "--reason is required"},
		{[]string{"approve"}, exitUsage, "accepts 1 arg"},
		{[]string{"approve", "../../etc"}, exitFailed, "run"},
	} {
		code, stdout, stderr := runCLI(t, append(tt.args, data...)...)
		if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
			t.Errorf("%v = %d %q %q, want %d and %q", tt.args, code, stdout, stderr, tt.code, tt.want)
		}
	}
}
