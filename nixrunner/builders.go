package nixrunner

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Builders are Nix remote builders in the syntax of Nix's `builders` setting (nix.conf(5), "builders";
// the manual's "Remote Builds"): entries separated by ';' or newlines, each
//
//	URI [SYSTEMS [SSH-KEY [MAX-JOBS [SPEED-FACTOR [SUPPORTED-FEATURES [MANDATORY-FEATURES [HOST-KEY]]]]]]]
//
// with '-' for a field left at its default, or '@FILE' naming a machines file in that syntax. cimdeploy
// does not distribute builds itself: it hands them to Nix, which sends each derivation to a machine
// that accepts it (its system and features) and copies the outputs back.
type Builders string

// BuilderProblem is a builder entry cimdeploy refuses, naming the entry (1-based) and the field.
type BuilderProblem struct {
	Entry int
	Field string
	Msg   string
}

func (p BuilderProblem) Error() string {
	return fmt.Sprintf("CIMDEPLOY_NIX_BUILDERS: entry %d: %s: %s", p.Entry, p.Field, p.Msg)
}

// builderFields names the fields of an entry, in order.
var builderFields = []string{"URI", "systems", "SSH key", "max jobs", "speed factor", "supported features", "mandatory features", "host key"}

// Validate checks every entry: an ssh:// or ssh-ng:// URI with a host (the protocols Nix's build hook
// speaks), systems like x86_64-linux, an absolute SSH key file that exists, positive numbers, and a
// host key that is the base64 of one OpenSSH public key line (Nix writes it into a known_hosts file of
// its own: without it, the user's known_hosts must know the builder). A '@FILE' entry must name an
// absolute path to a readable file; its lines are Nix's to read. Problems name the entry and field,
// never the key's contents.
func (b Builders) Validate() error {
	var errs []error
	for i, entry := range b.entries() {
		n := i + 1
		if file, ok := strings.CutPrefix(entry, "@"); ok {
			if !filepath.IsAbs(file) {
				errs = append(errs, BuilderProblem{n, "machines file", fmt.Sprintf("%q is not an absolute path", file)})
			} else if _, err := os.Stat(file); err != nil {
				errs = append(errs, BuilderProblem{n, "machines file", err.Error()})
			}
			continue
		}
		f := strings.Fields(entry)
		if len(f) > len(builderFields) {
			errs = append(errs, BuilderProblem{n, "fields", fmt.Sprintf("%d fields, at most %d", len(f), len(builderFields))})
			continue
		}
		set := func(i int) bool { return len(f) > i && f[i] != "-" }
		uri := f[0]
		scheme, rest, ok := strings.Cut(uri, "://")
		host, _, _ := strings.Cut(rest, "?")
		if _, h, at := strings.Cut(host, "@"); at {
			host = h
		}
		switch {
		case !ok || scheme != "ssh" && scheme != "ssh-ng":
			errs = append(errs, BuilderProblem{n, "URI", fmt.Sprintf("%q: want ssh://[USER@]HOST or ssh-ng://[USER@]HOST", uri)})
		case host == "" || strings.ContainsAny(host, "/ "):
			errs = append(errs, BuilderProblem{n, "URI", fmt.Sprintf("%q names no host", uri)})
		}
		if set(1) {
			for _, sys := range strings.Split(f[1], ",") {
				if arch, osName, ok := strings.Cut(sys, "-"); !ok || arch == "" || osName == "" {
					errs = append(errs, BuilderProblem{n, "systems", fmt.Sprintf("%q is no system like x86_64-linux", sys)})
				}
			}
		}
		if set(2) {
			if !filepath.IsAbs(f[2]) {
				errs = append(errs, BuilderProblem{n, "SSH key", fmt.Sprintf("%q is not an absolute path", f[2])})
			} else if _, err := os.Stat(f[2]); err != nil {
				errs = append(errs, BuilderProblem{n, "SSH key", err.Error()})
			}
		}
		for _, i := range []int{3, 4} {
			if set(i) {
				if v, err := strconv.Atoi(f[i]); err != nil || v < 1 {
					errs = append(errs, BuilderProblem{n, builderFields[i], fmt.Sprintf("%q: want a positive number", f[i])})
				}
			}
		}
		if set(7) {
			line, err := base64.StdEncoding.DecodeString(f[7])
			if err == nil {
				_, _, _, _, err = ssh.ParseAuthorizedKey(line)
			}
			if err != nil {
				errs = append(errs, BuilderProblem{n, "host key", "not the base64 of an OpenSSH public key line (base64 -w0 of the builder's ssh_host_ed25519_key.pub)"})
			}
		}
	}
	return errors.Join(errs...)
}

// entries are the non-empty entries, trimmed.
func (b Builders) entries() []string {
	var out []string
	for _, e := range strings.FieldsFunc(string(b), func(r rune) bool { return r == ';' || r == '\n' }) {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// nixConf is the `builders` line for NIX_CONFIG: entries joined by ';' (a newline would end the setting).
func (b Builders) nixConf() string {
	return "builders = " + strings.Join(b.entries(), " ; ") + "\n"
}
