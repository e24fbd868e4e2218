// Package cimdeploy deploys NixOS fleets whose configuration is a projection of CIM domain events.
//
//  1. gitops/events reads the repository's domain events and gitops/topology folds them into a topology.
//  2. gitops/projection writes the topology as a Nix flake: one NixOS configuration and LXC tarball per node.
//  3. webhooks turns a GitHub push or pull request into a pipeline.Run; stages check and build the flake.
//  4. remote uploads templates to Proxmox and copies closures to nodes over SSH.
//  5. The rollout switches nodes one at a time behind NATS health gates and rolls back by itself.
//
// Package deploy assembles a run from the configuration, for the CLI (cmd/cimdeploy) and a server alike.
package cimdeploy
