// Package gitops is what the infrastructure repository says: its domain events (gitops/events), the
// topology they fold into (gitops/topology) and the Nix projected from it (gitops/projection).
package gitops
