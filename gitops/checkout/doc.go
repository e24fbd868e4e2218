// Package checkout fetches one commit of the infrastructure repository into a per-run workspace.
//
// A Cache keeps one bare clone per repository and fetches only the objects it lacks (shallow while
// it can); Checkout copies one commit out of it into a Workspace, a clean git work tree Nix reads
// self.rev from; Close removes it, and Cache.Prune removes those crashed runs left behind. Revisions
// are validated before anything touches git (ValidateRev). CheckFastForward refuses a deploy branch
// whose new head does not descend from the last deployed commit, unless force pushes are allowed.
//
// All of it is go-git: no git binary is needed, except git-upload-pack for local (file) remotes.
package checkout
