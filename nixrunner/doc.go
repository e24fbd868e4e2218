// Package nixrunner runs nix with pinned flags: the experimental features cimdeploy needs, the offline
// options of the configuration and any --override-input, so every nix call is reproducible.
//
// A Runner (New) evaluates (Eval, OutPath), builds (Build), checks (FlakeCheck, FlakeCheckCached behind a
// CheckCache keyed by commit and flake.lock) and asks the store which paths exist (Valid), so callers
// skip builds whose outputs are already there. It works with Debian's Nix 2.8 and with current Nix: it
// parses nix build --json (2.8 has no --print-out-paths) and streams --log-format internal-json into
// Progress (builds done/expected, the derivation being built, log lines); the raw stream goes to the run
// log (WithLog), not to slog.
//
// Every failure is an *Error whose Kind (evaluation, build, failed check, timeout, cancelled, nix missing)
// comes from the context, the exit status and the log (see classify), with the last log lines. Every call
// has a finite timeout, and cancelling one stops nix's whole process group: SIGTERM first, so nix can stop
// its builders, then SIGKILL.
package nixrunner
