# cimdeploy itself, for the operator: the package, the `services.cimdeploy` NixOS module (nix/module.nix),
# a development shell.
#
#   nix build                         # result/bin/cimdeploy
#   nix run . -- version
#   nix develop                       # Go, gopls, nix, nats-server, natscli, jq, openssh
#   nix flake check                   # builds the package and a NixOS container running the module
#
# No flake.lock is committed: nixpkgs is not pinned here, `nix flake lock` pins it on the first use
# (commit the lock file in a deployment's own flake, which takes this one as an input).
{
  description = "cimdeploy: deploys NixOS fleets from an event-sourced infrastructure repository";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # A flake knows its commit, not its tag: builds from a flake name the commit ("dirty" for a work
      # tree with changes); the release workflow builds tagged binaries with the tag.
      version = self.shortRev or self.dirtyShortRev or "dirty";

      # The NAR hash of `go mod vendor`'s output (buildGoModule's goModules). nix/vendorhash_test.go
      # recomputes it and fails, naming the right one, when go.mod or go.sum moved on.
      vendorHash = "sha256-KKUatnrNKzcO0kaCekP0n/P1bkVlX+gQt3SnezmacvY=";

      cimdeploy = pkgs: (pkgs.buildGo126Module or pkgs.buildGoModule) {
        pname = "cimdeploy";
        inherit version vendorHash;
        # The whole tree: cmd/cimdeploy embeds the lab's files (fixtures/lab).
        src = self;
        subPackages = [ "cmd/cimdeploy" ];
        env.CGO_ENABLED = "0";
        # What `cimdeploy version` prints (cmd/cimdeploy/version.go); the release workflow sets the same.
        ldflags = [ "-s" "-w" "-X main.version=${version}" ];
        # The tests need real nix, sshd and nats-server (the lab): CI runs them, not the Nix sandbox.
        doCheck = false;
        meta = {
          description = "Deploys NixOS fleets from an event-sourced infrastructure repository";
          homepage = "https://github.com/cimdeploy/cimdeploy";
          mainProgram = "cimdeploy";
          platforms = lib.platforms.linux;
        };
      };
    in
    {
      overlays.default = final: _prev: { cimdeploy = cimdeploy final; };

      packages = forAllSystems (pkgs: {
        default = cimdeploy pkgs;
        cimdeploy = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/cimdeploy";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.go_1_26 or pkgs.go)
            pkgs.gopls
            pkgs.nix
            pkgs.nats-server
            pkgs.natscli
            pkgs.jq
            pkgs.openssh
          ];
        };
      });

      # services.cimdeploy, with this flake's package as the default.
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.cimdeploy.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };
      nixosModules.cimdeploy = self.nixosModules.default;

      checks = forAllSystems (pkgs:
        let system = pkgs.stdenv.hostPlatform.system;
        in {
          package = self.packages.${system}.default;
          # A NixOS container with the typical settings of nix/tests/service.nix: the module's options
          # type-check, its assertions hold, and the system (unit, user, firewall) builds.
          module = (lib.nixosSystem {
            inherit system;
            modules = [ self.nixosModules.default ./nix/tests/service.nix ];
          }).config.system.build.toplevel;
        });
    };
}
