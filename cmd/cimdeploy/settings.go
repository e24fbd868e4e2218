package main

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// zeroMeans lists the numeric flags whose zero or negative value means something (--limit 0: all).
var zeroMeans = map[string]bool{"limit": true, "to-generation": true}

// envInUsage finds the variable a flag's help names: "... [CIMDEPLOY_NIX_TIMEOUT]".
var envInUsage = regexp.MustCompile(`\[(CIMDEPLOY_[A-Z0-9_]+)\]`)

// checkPositive refuses a zero or negative timeout, count or size given explicitly, by a flag or a
// CIMDEPLOY_* variable: there is no "forever" and no silent default. A setting left unset keeps its
// default (a variable's default, or what the code picks for an unset one, such as the number of
// build workers). opts is the command's options struct: every numeric field with an env tag is
// checked when its variable is set; every numeric flag the command line sets is checked as well.
func checkPositive(cmd *cobra.Command, opts any) error {
	var errs []error
	flagOf := map[string]*pflag.Flag{} // variable -> its flag
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if m := envInUsage.FindStringSubmatch(f.Usage); m != nil {
			flagOf[m[1]] = f
		}
	})
	cmd.Flags().Visit(func(f *pflag.Flag) { // the flags given on the command line
		if zeroMeans[f.Name] {
			return
		}
		if bad, want := notPositive(f.Value.Type(), f.Value.String()); bad {
			name := "--" + f.Name
			if m := envInUsage.FindStringSubmatch(f.Usage); m != nil {
				name += " (" + m[1] + ")"
			}
			errs = append(errs, fmt.Errorf("%s %s: want %s; leave it unset for the default", name, f.Value, want))
		}
	})
	walkEnv(reflect.ValueOf(opts), func(env string, v reflect.Value) {
		if f := flagOf[env]; f != nil && f.Changed {
			return // the flag wins and was checked above
		}
		if raw, ok := os.LookupEnv(env); !ok || raw == "" {
			return // unset: the default
		}
		typ := "int"
		if v.Type() == reflect.TypeOf(time.Duration(0)) {
			typ = "duration"
		}
		if bad, want := notPositive(typ, fmt.Sprint(v.Interface())); bad {
			name := env
			if f := flagOf[env]; f != nil {
				name += " (--" + f.Name + ")"
			}
			errs = append(errs, fmt.Errorf("%s=%s: want %s; leave it unset for the default", name, os.Getenv(env), want))
		}
	})
	return errors.Join(errs...)
}

// notPositive reports whether a numeric setting's value is zero or negative, and what it wants.
func notPositive(typ, value string) (bool, string) {
	switch typ {
	case "duration":
		d, err := time.ParseDuration(value)
		return err == nil && d <= 0, "a positive duration (there is no \"forever\")"
	case "int", "int64", "int32", "uint", "uint64":
		return strings.HasPrefix(value, "-") || strings.Trim(value, "0") == "", "at least 1"
	}
	return false, ""
}

// walkEnv calls fn for every numeric field with an env tag in v, a struct or a pointer to one,
// nested structs included.
func walkEnv(v reflect.Value, fn func(env string, field reflect.Value)) {
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	t := v.Type()
	for i := range t.NumField() {
		sf, fv := t.Field(i), v.Field(i)
		if !sf.IsExported() && !sf.Anonymous {
			continue
		}
		tag, ok := sf.Tag.Lookup("env")
		switch {
		case !ok && fv.Kind() == reflect.Struct:
			walkEnv(fv, fn)
		case ok && (fv.Kind() == reflect.Int || fv.Kind() == reflect.Int64):
			name, _, _ := strings.Cut(tag, ",")
			fn(strings.TrimSpace(name), fv)
		}
	}
}
