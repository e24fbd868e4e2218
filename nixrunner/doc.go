// Package nixrunner runs nix with pinned flags: the experimental features cimdeploy needs, the offline
// options of the configuration and any --override-input, so every nix call is reproducible.
package nixrunner
