// Package nixtest runs a test package once per Nix version, for tests that run nix. It is test support:
// only _test.go files import it.
//
// A package whose tests run nix (through nixrunner, the lab, or nix-* on PATH) calls Main from its
// TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(nixtest.Main(m.Run)) }
//
// Main runs the test binary again, with the same flags, once per Nix of Versions, each time with that
// Nix's directory first on PATH, so every nix, nix-store and nix-instantiate the tests and the code
// under test start (nixrunner's default "nix", the lab's, exec.Command("nix", ...)) is that version.
// No test needs to change. The lab's nodes are not affected: their SSH sessions have a PATH of their own.
//
// The versions: CIMDEPLOY_TEST_NIX, a list of nix executables or of directories holding nix, separated
// by ':' as in PATH. Unset or empty, it is the nix on PATH (Debian's nix-bin, 2.8 on Debian 12) and the
// Nix 2.26 that .ci/nix-trixie installs, when it is there. With CI=true that second Nix must be there: a
// missing one fails the package, naming the script that installs it.
package nixtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Variables Main reads and sets.
const (
	// Env lists the nix executables (or directories) to run the tests with, ':'-separated.
	Env = "CIMDEPLOY_TEST_NIX"
	// TrixieDirEnv is where .ci/nix-trixie installs (default: the user cache directory's
	// cimdeploy/nix-trixie); its bin directory holds the nix programs.
	TrixieDirEnv = "CIMDEPLOY_NIX_TRIXIE_DIR"
	// currentEnv marks a run of the test binary started by Main for one version: the version nix on
	// PATH must report.
	currentEnv = "CIMDEPLOY_TEST_NIX_CURRENT"
)

// noTests is what package testing prints on stderr when no test matched (testing.MainStart's Run).
const noTests = "testing: warning: no tests to run"

// Nix is one version the tests run with.
type Nix struct {
	Dir     string // the directory holding nix, nix-store, nix-instantiate ...; first on PATH
	Version string // what nix --version prints, e.g. "nix (Nix) 2.8.0"
}

// TrixieDir is the directory whose bin/ holds the Nix 2.26 of .ci/nix-trixie.
func TrixieDir() (string, error) {
	if d := os.Getenv(TrixieDirEnv); d != "" {
		return d, nil
	}
	cache, err := os.UserCacheDir() // $XDG_CACHE_HOME or $HOME/.cache, as the script
	if err != nil {
		return "", fmt.Errorf("nixtest: %w", err)
	}
	return filepath.Join(cache, "cimdeploy", "nix-trixie"), nil
}

// Versions returns the Nix versions to test with, in order, each asked for its version. An entry of
// CIMDEPLOY_TEST_NIX that does not run is an error. Without the variable: the nix on PATH (none is no
// error: the tests then fail themselves, naming Debian's nix-bin) and .ci/nix-trixie's, which must be
// installed when ci is true.
func Versions(ci bool) ([]Nix, error) {
	var dirs []string
	if v := os.Getenv(Env); v != "" {
		for _, e := range filepath.SplitList(v) {
			if e == "" {
				continue
			}
			if fi, err := os.Stat(e); err == nil && fi.IsDir() {
				e = filepath.Join(e, "nix")
			}
			p, err := exec.LookPath(e)
			if err != nil {
				return nil, fmt.Errorf("nixtest: %s: %w", Env, err)
			}
			dirs = append(dirs, filepath.Dir(p))
		}
	} else {
		if p, err := exec.LookPath("nix"); err == nil {
			dirs = append(dirs, filepath.Dir(p))
		}
		trixie, err := TrixieDir()
		if err != nil {
			return nil, err
		}
		bin := filepath.Join(trixie, "bin")
		if _, err := os.Stat(filepath.Join(bin, "nix")); err == nil {
			dirs = append(dirs, bin)
		} else if ci {
			return nil, fmt.Errorf("nixtest: CI=true and the second Nix (Debian trixie's nix-bin 2.26) is missing "+
				"in %s: install it with .ci/nix-trixie (or .ci/setup), or name the versions in %s", bin, Env)
		}
	}
	var out []Nix
	var seen []string
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, fmt.Errorf("nixtest: %w", err)
		}
		nix := filepath.Join(abs, "nix")
		real, err := filepath.EvalSymlinks(nix)
		if err != nil {
			return nil, fmt.Errorf("nixtest: %w", err)
		}
		if slices.Contains(seen, real) {
			continue
		}
		seen = append(seen, real)
		v, err := version(nix)
		if err != nil {
			return nil, err
		}
		out = append(out, Nix{Dir: abs, Version: v})
	}
	return out, nil
}

func version(nix string) (string, error) {
	out, err := exec.Command(nix, "--version").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("nixtest: %s --version: %w", nix, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Main runs the tests (run, usually m.Run) once per Nix of Versions and returns the worst exit code.
//
// With one version it sets PATH and calls run in this process. With more, it starts the test binary
// again per version, one after the other, with the same flags, that version's directory first on PATH
// and CIMDEPLOY_NIX_BIN unset (so cimdeploy's default "nix" is that version too), and prints a line
// naming the version before each run. Such a run checks that nix on PATH is the version it was started
// for, then calls run. The runs do not write go test's cache log (-test.testlogfile): a package that
// runs nix is never reported from the cache.
//
// later are test flags added to the runs of the versions after the first, to leave out the tests that
// run no nix: "-test.skip=^TestShims$" or "-test.run=^TestCopy". A flag the command line already sets
// (go test -run, -skip) wins over the one of later.
func Main(run func() int, later ...string) int {
	if want, ok := os.LookupEnv(currentEnv); ok {
		got, err := version("nix")
		if err != nil || got != want {
			fmt.Fprintf(os.Stderr, "nixtest: nix on PATH is %q (%v), want %q\n", got, err, want)
			return 1
		}
		return run()
	}
	versions, err := Versions(os.Getenv("CI") == "true")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	switch len(versions) {
	case 0:
		return run() // no nix at all: the tests say what is missing
	case 1:
		n := versions[0]
		fmt.Printf("nixtest: %s (%s)\n", n.Version, n.Dir)
		if err := errors.Join(os.Setenv("PATH", n.Dir+string(filepath.ListSeparator)+os.Getenv("PATH")),
			os.Unsetenv("CIMDEPLOY_NIX_BIN"), os.Setenv(currentEnv, n.Version)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return run()
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "nixtest: %v\n", err)
		return 1
	}
	args := slices.DeleteFunc(slices.Clone(os.Args[1:]), func(a string) bool {
		return strings.HasPrefix(a, "-test.testlogfile=")
	})
	// The runs stop with this process: go test's timeout (SIGQUIT, then SIGKILL) and Ctrl-C reach them.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	code := 0
	for i, n := range versions {
		fmt.Printf("nixtest: %s (%s)\n", n.Version, n.Dir)
		runArgs := args
		if i > 0 {
			runArgs = withFlags(args, later)
			if len(runArgs) > len(args) {
				fmt.Printf("nixtest: only the tests that run nix: %s\n", strings.Join(runArgs[len(args):], " "))
			}
		}
		cmd := exec.Command(self, runArgs...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		var filtered *io.PipeWriter
		var copied chan struct{}
		if i > 0 {
			// A later run that leaves out every test the command line asked for says "no tests to run",
			// which go test would report for the whole package: that line is dropped.
			var r *io.PipeReader
			r, filtered = io.Pipe()
			cmd.Stderr, copied = filtered, make(chan struct{})
			go func() {
				defer close(copied)
				sc := bufio.NewScanner(r)
				sc.Buffer(make([]byte, 64<<10), 16<<20)
				for sc.Scan() {
					if sc.Text() != noTests {
						fmt.Fprintln(os.Stderr, sc.Text())
					}
				}
				_, _ = io.Copy(os.Stderr, r) // a line too long for the scanner: the rest as it is
			}()
		}
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "CIMDEPLOY_NIX_BIN=")
		}), "PATH="+n.Dir+string(filepath.ListSeparator)+os.Getenv("PATH"), currentEnv+"="+n.Version)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "nixtest: %s: %v\n", n.Version, err)
			return 1
		}
		done := make(chan struct{})
		go func() {
			for {
				select {
				case s := <-sigs:
					_ = cmd.Process.Signal(s)
				case <-done:
					return
				}
			}
		}()
		err := cmd.Wait()
		close(done)
		if filtered != nil {
			filtered.Close()
			<-copied
		}
		if err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				fmt.Fprintf(os.Stderr, "nixtest: %s: %v\n", n.Version, err)
				code = max(code, 1)
				continue
			}
			fmt.Printf("nixtest: FAIL with %s\n", n.Version)
			code = max(code, ee.ExitCode(), 1)
		}
	}
	return code
}

// withFlags returns args with each flag of extra ("-test.name=value") the args do not set already.
func withFlags(args, extra []string) []string {
	out := slices.Clone(args)
	for _, f := range extra {
		name, _, _ := strings.Cut(f, "=")
		if !slices.ContainsFunc(args, func(a string) bool { return a == name || strings.HasPrefix(a, name+"=") }) {
			out = append(out, f)
		}
	}
	return out
}
