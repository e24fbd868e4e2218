package main

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cimdeploy/cimdeploy/deploy"
)

// zeroMeans lists the numeric flags whose zero or negative value means something (--limit 0: all).
var zeroMeans = map[string]bool{"limit": true, "to-generation": true}

// envInUsage finds the variable a flag's help names: "... [CIMDEPLOY_NIX_TIMEOUT]".
var envInUsage = regexp.MustCompile(`\[(CIMDEPLOY_[A-Z0-9_]+)\]`)

// boundFlags maps each variable a flag of cmd names in its help to the flag.
func boundFlags(cmd *cobra.Command) map[string]deploy.Flag {
	flags := map[string]deploy.Flag{}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if m := envInUsage.FindStringSubmatch(f.Usage); m != nil {
			flags[m[1]] = deploy.Flag{Name: f.Name, Changed: f.Changed}
		}
	})
	return flags
}

// checkFlags refuses a zero or negative timeout, count or size the command line gives: there is no
// "forever" and no silent default.
func checkFlags(cmd *cobra.Command) error {
	var errs []error
	cmd.Flags().Visit(func(f *pflag.Flag) { // the flags given on the command line
		if zeroMeans[f.Name] {
			return
		}
		if bad, want := deploy.NotPositive(f.Value.Type(), f.Value.String()); bad {
			name := "--" + f.Name
			if m := envInUsage.FindStringSubmatch(f.Usage); m != nil {
				name += " (" + m[1] + ")"
			}
			errs = append(errs, fmt.Errorf("%s %s: want %s; leave it unset for the default", name, f.Value, want))
		}
	})
	return errors.Join(errs...)
}

// checkPositive is checkFlags and, for the settings of opts (a command's options struct) that a
// CIMDEPLOY_* variable sets and no flag replaced, the same check of the variable's value.
func checkPositive(cmd *cobra.Command, opts any) error {
	errs := []error{checkFlags(cmd)}
	errs = append(errs, deploy.CheckPositive(opts, envconfig.OsLookuper(), boundFlags(cmd))...)
	return errors.Join(errs...)
}

// bindFlags finishes a command's deploy.Config once cobra parsed the command line: envErr (from
// deploy.Load) and zero or negative flags are usage errors; the flags are bound to their variables,
// so Validate names them and leaves the ones given to checkFlags.
func bindFlags(cmd *cobra.Command, cfg *deploy.Config, envErr error) error {
	if envErr != nil {
		return usageError(envErr)
	}
	if err := checkFlags(cmd); err != nil {
		return usageError(err)
	}
	for variable, f := range boundFlags(cmd) {
		cfg.BindFlag(variable, f)
	}
	return nil
}
