package remote

import (
	"errors"
	"fmt"
	"strings"
)

// Quote returns s as one word of a POSIX shell command line (sh, dash, bash, zsh): unchanged when it
// holds only characters no shell treats specially, otherwise in single quotes, where each single
// quote of s ends the quoting, is written escaped (backslash, quote) and starts it again. Inside
// single quotes every other byte stands for itself, so any string without NUL survives the shell
// unchanged. "=" and "~" are quoted too: a first word with "=" would be an
// assignment and a leading "~" would expand.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	if strings.Trim(s, safeChars) == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

const safeChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:,@+"

// Join quotes every word of argv with Quote and joins them with spaces: the command line sshd hands
// to the remote user's login shell, which splits it back into exactly argv.
func Join(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		words[i] = Quote(a)
	}
	return strings.Join(words, " ")
}

// errEmptyArgv and checkArgv guard Run: a command is a program and its arguments, and an argument
// with a NUL byte cannot exist in a real argv (the remote kernel would cut it there).
var errEmptyArgv = errors.New("empty argv")

func checkArgv(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return errEmptyArgv
	}
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("argv[%d] %q holds a NUL byte", i, a)
		}
	}
	return nil
}

// Script is the argv that runs a fixed POSIX shell script with args as its positional parameters
// ($1, $2, ...): the script is a constant of this package, the values only ever arrive as arguments,
// so no value is ever pasted into shell code.
func Script(script string, args ...string) []string {
	return append([]string{"sh", "-c", script, "sh"}, args...)
}
