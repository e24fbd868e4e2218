package rollout

import (
	"testing"
	"time"
)

func TestParseGenerations(t *testing.T) {
	out := "2\t1763632800\t/nix/store/bbb-nixos-system-b\tcurrent\tcafe\n" +
		"10\t1763636400\t/nix/store/ccc-nixos-system-c\t\tdirty\n" +
		"1\t1763629200\t/nix/store/aaa-nixos-system-a\t\t\n"
	gens, err := parseGenerations(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(gens) != 3 || gens[0].Number != 1 || gens[2].Number != 10 || !gens[1].Current || gens[1].Revision != "cafe" ||
		gens[2].Revision != "dirty" || gens[0].Date != time.Unix(1763629200, 0).UTC() || gens[1].Toplevel != "/nix/store/bbb-nixos-system-b" {
		t.Errorf("generations %+v", gens)
	}
	if cur := CurrentGeneration(gens); cur.Number != 2 {
		t.Errorf("current %+v", cur)
	}
	if gens, err := parseGenerations(""); err != nil || len(gens) != 0 {
		t.Errorf("no generations: %v %v", gens, err)
	}
	for _, bad := range []string{"x\t1\t/p\t\t\n", "1\t2\t3\n"} {
		if _, err := parseGenerations(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestLinkGeneration(t *testing.T) {
	for link, want := range map[string]int{"system-12-link": 12, "/nix/var/nix/profiles/system-1-link": 1} {
		if n, err := linkGeneration(link); err != nil || n != want {
			t.Errorf("%s: %d, %v", link, n, err)
		}
	}
	for _, bad := range []string{"", "system", "system-x-link", "/nix/store/abc-nixos-system"} {
		if _, err := linkGeneration(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestSecondsAndIDs(t *testing.T) {
	for d, want := range map[time.Duration]string{5 * time.Minute: "300s", 1500 * time.Millisecond: "1.5s", time.Microsecond: "0.001s"} {
		if got := seconds(d); got != want {
			t.Errorf("seconds(%s) = %s, want %s", d, got, want)
		}
	}
	for _, ok := range []string{"20261122T024401Z-ab12", "cimdeploy-switch-nats-1-x_y.z"} {
		if err := checkID(ok); err != nil {
			t.Error(err)
		}
	}
	for _, bad := range []string{"", ".x", "a b", "a/b", "a;b", "$(x)"} {
		if err := checkID(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if got := switchIDs("2026:x/y", "nats-1", "revert"); got.timer != "2026_x_y-revert" || got.unit != "cimdeploy-switch-nats-1-2026_x_y-revert" {
		t.Errorf("ids %+v", got)
	}
}

func TestExitMeaning(t *testing.T) {
	for code, want := range map[int]string{0: "switched", 1: "bootloader", 2: "activation failed", 3: "daemon-reload", 4: "new generation is active", 100: "reboot", 7: "unknown exit code 7"} {
		if got := ExitMeaning(code); !contains(got, want) {
			t.Errorf("ExitMeaning(%d) = %q, want %q in it", code, got, want)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
