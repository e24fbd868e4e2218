package deploy

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"
)

// checkPositive refuses a zero or negative timeout, count or size that a variable sets: there is no
// "forever" and no silent default. A variable left unset keeps its default; a variable a flag
// replaced is the command line's to check.
func (c *Config) checkPositive() []error {
	lookup := c.lookup
	if lookup == nil {
		lookup = envconfig.OsLookuper()
	}
	return CheckPositive(c, lookup, c.flags)
}

// CheckPositive reports every numeric field of target (a struct or a pointer to one, nested structs
// included) whose variable lookup sets, and whose value is zero or negative. flags (variable -> flag,
// may be nil) name the flag of a variable in the message; a variable whose flag the command line gave
// is skipped. Each problem names the variable and its value: "CIMDEPLOY_NIX_TIMEOUT (--nix-timeout)=0:
// want a positive duration ...".
func CheckPositive(target any, lookup envconfig.Lookuper, flags map[string]Flag) []error {
	var errs []error
	walkEnv(reflect.ValueOf(target), func(env string, v reflect.Value) {
		f, bound := flags[env]
		if bound && f.Changed {
			return // the flag wins
		}
		raw, ok := lookup.Lookup(env)
		if !ok || raw == "" {
			return // unset: the default
		}
		typ := "int"
		if v.Type() == reflect.TypeOf(time.Duration(0)) {
			typ = "duration"
		}
		if bad, want := NotPositive(typ, fmt.Sprint(v.Interface())); bad {
			name := env
			if bound {
				name += " (--" + f.Name + ")"
			}
			errs = append(errs, fmt.Errorf("%s=%s: want %s; leave it unset for the default", name, raw, want))
		}
	})
	return errs
}

// NotPositive reports whether a numeric setting's value (typ: a pflag type name, "duration" or
// "int"...) is zero or negative, and what it wants instead.
func NotPositive(typ, value string) (bool, string) {
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
