// Package remotetest holds in-memory fakes of remote.Proxmox and remote.Node for tests: real
// implementations of the interfaces with knobs (free space, a connection cut mid-upload, a failing
// pct create, a host that is down, programs that exit with a code). It is for tests only: never
// import it from code that ships. The contract suite of package remote runs against these fakes and
// against the lab, so the fakes behave like pct over SSH and sshd with real Nix.
package remotetest
