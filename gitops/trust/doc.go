// Package trust decides whether a commit is signed by a key the operator trusts.
//
// Load reads a trusted-signers file: SSH allowed-signers lines (the format of ssh-keygen(1), ALLOWED
// SIGNERS) and ASCII-armored OpenPGP public key blocks, in any mix. Signers.Verify reads a commit's
// gpgsig header and checks it as `git verify-commit` would with gpg.ssh.allowedSignersFile pointing at
// the same file: SSH signatures (the SSHSIG format of OpenSSH's PROTOCOL.sshsig, namespace "git") with
// golang.org/x/crypto/ssh, OpenPGP signatures with go-git's Commit.Verify. A refusal is an *Error whose
// message says why in a line short enough for a forge status.
package trust
