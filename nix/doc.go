// Package nix holds cimdeploy's own Nix packaging, which flake.nix at the repository's root outputs:
// module.nix (services.cimdeploy, `cimdeploy serve` as a hardened systemd service) and tests/service.nix
// (a typical configuration, built by the flake's checks). It has no Go code; its tests check, with real
// Nix, the module against the lab's stand-in for nixpkgs (fixtures/lab/nixpkgs) and flake.nix's
// vendorHash against `go mod vendor`.
package nix
