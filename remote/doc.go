// Package remote talks to machines over SSH: commands on nodes and on the Proxmox host, templates to
// Proxmox, Nix closures to nodes, containers through pct.
//
// A Pool (NewPool, from a Config read by LoadConfig) holds one SSH connection per host, opened on
// first use with key authentication (a key file, its passphrase from a file, or the ssh-agent) and
// strict host key checking against known_hosts, kept alive with keepalive@openssh.com, closed when
// dead and opened again on the next command, directly or through a jump host. Its Clients run
// commands as argvs (Cmd), quoted for the remote shell (Quote, Join, Script): no value is ever
// pasted into a command line. Output streams to the caller's writers or the run log; failures are an
// *Error naming host and step, wrapping *ExitError, *HostKeyError, ErrConnectionLost,
// ErrNoExitStatus, ErrAuth or the cause.
//
// On top of that, two interfaces are all the deployment needs of machines: Node (commands, and
// CopyClosure: exactly the store paths a node lacks, nix-store --export into nix-store --import over
// the node's connection) and Proxmox (UploadTemplate: content-addressed, skipped when unchanged,
// verified before it gets its final name; Status; EnsureContainer: created from the template when
// missing, never destroyed unless asked). SSHNode and PCT (pct over SSH) implement them; a REST API
// implementation of Proxmox can follow. Package remotetest has in-memory fakes of both, and one
// contract suite (contract_test.go) runs against the fakes and the lab (fixtures/lab).
package remote
