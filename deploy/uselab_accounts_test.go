package deploy

import (
	"testing"

	"github.com/sethvargo/go-envconfig"
)

// TestUseLabSystemNkey: the lab's events define accounts, so the lab gives the gate its system user's
// nkey file, unless the user set a system account user of their own.
func TestUseLabSystemNkey(t *testing.T) {
	t.Parallel()
	lab := LabEnv{RepoDir: "/lab/repo", Env: map[string]string{"CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE": "/lab/nkeys/cimdeploy.nk"}}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want func(c Config) bool
	}{
		{"nothing set", map[string]string{}, func(c Config) bool { return c.Rollout.SystemNkeyFile == "/lab/nkeys/cimdeploy.nk" }},
		{"the user's nkey", map[string]string{"CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE": "/mine.nk"},
			func(c Config) bool { return c.Rollout.SystemNkeyFile == "/mine.nk" }},
		{"the user's creds", map[string]string{"CIMDEPLOY_ROLLOUT_SYSTEM_CREDS_FILE": "/sys.creds"},
			func(c Config) bool {
				return c.Rollout.SystemNkeyFile == "" && c.Rollout.SystemCredsFile == "/sys.creds"
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(t.Context(), envconfig.MapLookuper(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.UseLab(t.Context(), lab); err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Errorf("rollout config after UseLab: %+v", c.Rollout)
			}
		})
	}
}
