package nixrunner

import (
	"os"
	"strings"
)

// OfflineConfig is the nix.conf text cimdeploy runs nix with when no binary cache is reachable: flakes
// enabled, builds as the calling user, no sandbox, no substituters. It works with Nix 2.8 and newer.
const OfflineConfig = "experimental-features = nix-command flakes\n" +
	"build-users-group =\n" +
	"sandbox = false\n" +
	"substituters =\n"

// Environ returns env (os.Environ() when nil) with NIX_CONFIG extended by extra nix.conf lines.
// Settings given later win, so extra overrides what the user's NIX_CONFIG says.
func Environ(env []string, extra string) []string {
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+1)
	current := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "NIX_CONFIG="); ok {
			current = v
			continue
		}
		out = append(out, kv)
	}
	if current != "" && !strings.HasSuffix(current, "\n") {
		current += "\n"
	}
	return append(out, "NIX_CONFIG="+current+extra)
}
