package rollout

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestModeScripts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, script, want string
	}{
		{name: "test", script: actionScript(ModeTest), want: `"$1/bin/switch-to-configuration" test`},
		{name: "boot", script: actionScript(ModeBoot), want: `"$1/bin/switch-to-configuration" boot`},
		{name: "boot rollback", script: bootRollbackScript, want: `"$5/bin/switch-to-configuration" boot`},
	} {
		if !strings.Contains(tc.script, tc.want) || strings.Contains(tc.script, `switch-to-configuration" switch`) {
			t.Errorf("%s script does not run %s:\n%s", tc.name, tc.want, tc.script)
		}
	}
	if err := checkAction("dry-activate"); err == nil {
		t.Error("dry-activate accepted")
	}
}

func TestModeParseInhibitorLines(t *testing.T) {
	t.Parallel()
	file := base64.StdEncoding.EncodeToString([]byte("{\n  \"dbus-implementation\": \"broker\"\n}\n"))
	got, err := parseInhibitorLines("file "+file+"\nnone\nabsent\nfile "+base64.StdEncoding.EncodeToString([]byte("[1]"))+"\n", 4)
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Present || got[0].Values["dbus-implementation"] != "broker" {
		t.Errorf("file: %+v", got[0])
	}
	if !got[1].Present || got[1].Values != nil || got[2].Present {
		t.Errorf("none, absent: %+v %+v", got[1], got[2])
	}
	// Not an object of strings: no inhibitors, as the check's `try fromjson catch {}`.
	if !got[3].Present || got[3].Values != nil {
		t.Errorf("bad JSON: %+v", got[3])
	}
	for _, bad := range []string{"", "none\n", "file !!!\nnone\n", "what\nnone\n"} {
		if _, err := parseInhibitorLines(bad, 2); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
