package remote_test

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/remote"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{in: "", want: "''"},
		{in: "nix-store", want: "nix-store"},
		{in: "/nix/store/abc-x.drv", want: "/nix/store/abc-x.drv"},
		{in: "a b", want: "'a b'"},
		{in: "it's", want: `'it'\''s'`},
		{in: "$(reboot)", want: "'$(reboot)'"},
		{in: "FOO=bar", want: "'FOO=bar'"},
		{in: "~root", want: "'~root'"},
		{in: "#comment", want: "'#comment'"},
		{in: "a\nb", want: "'a\nb'"},
	} {
		if got := remote.Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// shells are the shells a remote login shell may be: dash (Debian's /bin/sh) and bash (NixOS root).
func shells(t testing.TB) []string {
	var sh []string
	for _, s := range []string{"/bin/sh", "/bin/bash"} {
		if _, err := os.Stat(s); err == nil {
			sh = append(sh, s)
		}
	}
	if len(sh) == 0 {
		t.Fatal("no /bin/sh")
	}
	return sh
}

// roundTrip runs Join(argv) with shell -c, as sshd does, and returns the argv the program got.
func roundTrip(t testing.TB, shell string, argv []string) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	line := remote.Join(append([]string{self}, argv...))
	cmd := exec.Command(shell, "-c", line)
	cmd.Env = append(os.Environ(), argvHelperEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s -c %q: %v: %s", shell, line, err, stderr.String())
	}
	got := []string{}
	for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if l == "" && len(argv) == 0 {
			continue
		}
		b, err := hex.DecodeString(l)
		if err != nil {
			t.Fatalf("helper output %q: %v", out, err)
		}
		got = append(got, string(b))
	}
	return got
}

func equalArgv(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestJoinSurvivesTheShell(t *testing.T) {
	argv := []string{"", " ", "a b", "it's", `"dq"`, `back\slash`, "$HOME", "`id`", "$(id)", "*", "?", "[a]",
		"~", "~root", "a=b", "#x", "x;y", "x|y", "x&y", "<in", ">out", "{a,b}", "!", "\t", "line\nbreak", "é\xff\x01", "-n", "--"}
	for _, sh := range shells(t) {
		if got := roundTrip(t, sh, argv); !equalArgv(got, argv) {
			t.Errorf("%s: got %q, want %q", sh, got, argv)
		}
	}
}

// FuzzJoin checks that any argv without NUL bytes survives Join and the real shells unchanged. Each
// input is cut into words at 0x1f.
func FuzzJoin(f *testing.F) {
	for _, s := range []string{"", "a", "a\x1fb c", "'\x1f\"", "$(x)\x1f`y`", "\\\x1f\\'", "\xff\xfe", "~\x1f=\x1f#"} {
		f.Add(s)
	}
	sh := shells(f)
	f.Fuzz(func(t *testing.T, s string) {
		if strings.IndexByte(s, 0) >= 0 {
			t.Skip("an argv cannot hold NUL")
		}
		argv := strings.Split(s, "\x1f")
		for _, shell := range sh {
			if got := roundTrip(t, shell, argv); !equalArgv(got, argv) {
				t.Fatalf("%s: got %q, want %q (line %s)", shell, got, argv, remote.Join(argv))
			}
		}
	})
}
