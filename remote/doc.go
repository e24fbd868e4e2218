// Package remote talks to machines over SSH: commands on nodes and on the Proxmox host, templates to
// Proxmox, Nix closures to nodes, containers through pct.
package remote
