#!/usr/bin/env bash
# Records nix's internal-json stderr for the parser's golden tests (progress_test.go):
#   nixrunner/testdata/record.sh NIX PREFIX     e.g. record.sh ~/.cache/cimdeploy/nix-trixie/bin/nix nix-2.26
# writes PREFIX-{build,build-failure,eval-error,flake-check-eval-error,flake-check-failure}.log here;
# then go test ./nixrunner -run TestParserGolden -update writes their golden files (review the diff).
# The flakes are built in /tmp/rec and /tmp/rec2 with a fresh nonce, so every build really runs.
set -euo pipefail
nix=$1 prefix=$2
out=$(cd "$(dirname "$0")" && pwd)
export NIX_CONFIG=$'experimental-features = nix-command flakes\nbuild-users-group =\nsandbox = false\nsubstituters =\n'
nonce=$RANDOM$RANDOM
flake() { # dir, outputs
  rm -rf "$1" && mkdir -p "$1"
  cat >"$1/flake.nix" <<NIX
{
  outputs = { self }: let
    mk = name: script: derivation {
      inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ];
      PATH = "/usr/bin:/bin"; nonce = "$nonce";
    };
    dep = mk "dep" "echo building dep; echo dep > \$out";
  in {
$2
  };
}
NIX
}
record() { # name, args...
  local name=$1; shift
  "$nix" --log-format internal-json "$@" 2>"$out/$prefix-$name.log" >/dev/null || true
}
flake /tmp/rec 'packages.x86_64-linux.default = mk "ok" "echo first line ${dep}; echo second line; echo ok > $out";'
record build build --no-link path:/tmp/rec
flake /tmp/rec 'packages.x86_64-linux.default = mk "fail" "echo about to fail; echo on stderr >&2; exit 3";'
record build-failure build --no-link path:/tmp/rec
flake /tmp/rec 'packages.x86_64-linux.default = throw "recorded evaluation failure";'
record eval-error build --no-link path:/tmp/rec
record flake-check-eval-error flake check path:/tmp/rec
flake /tmp/rec2 'packages.x86_64-linux.default = mk "ok" "echo ok > $out"; checks.x86_64-linux.failing = mk "check-failing" "echo check says no; exit 1";'
record flake-check-failure flake check path:/tmp/rec2
