package rollout

import (
	"context"
	"fmt"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/remote"
)

// Secrets puts the files a node needs outside the Nix store (TLS certificates and keys) in place on
// the node before its switch. remote.SecretsDir implements it from a local directory; the rollout
// calls Check for every node it will switch before it touches any (the pre-flight), and Install on
// each node between copying its closure and activating it. Implementations never log or return a
// secret's contents.
type Secrets interface {
	// Check reports whether node's secrets are all there and readable; the error names node and file.
	Check(node string) error
	// Install writes node's secrets on it through r.
	Install(ctx context.Context, node string, r remote.Runner) error
}

// NewSecrets is the Secrets of the cluster top from the local directory dir (<dir>/<node>/<file>),
// installed into the topology's secrets directory owned by owner; nil when top is not secured or dir
// is empty. Each node's files are top.SecretFiles(node): the node's certificate and key, and a leaf
// node's certificates for its leafnode connections.
func NewSecrets(top *topology.Topology, dir, owner string) Secrets {
	if top.Security == nil || dir == "" {
		return nil
	}
	return nodeSecrets{top: top, dir: remote.SecretsDir{Dir: dir, Files: topology.SecretFiles, RemoteDir: top.Security.SecretsDir, Owner: owner}}
}

// nodeSecrets is a remote.SecretsDir whose files are each node's own (topology.SecretFiles).
type nodeSecrets struct {
	top *topology.Topology
	dir remote.SecretsDir
}

func (s nodeSecrets) of(node string) remote.SecretsDir {
	d := s.dir
	d.Files = s.top.SecretFiles(node)
	return d
}

func (s nodeSecrets) Check(node string) error { return s.of(node).Check(node) }

func (s nodeSecrets) Install(ctx context.Context, node string, r remote.Runner) error {
	return s.of(node).Install(ctx, node, r)
}

// checkSecrets is the secrets' pre-flight: every node the plan switches or provisions has all its
// files. It returns one problem per node that lacks one.
func (r *Rollout) checkSecrets(plan *Plan) []string {
	if r.Secrets == nil {
		return nil
	}
	var problems []string
	for _, np := range plan.Nodes {
		if np.Action != ActionSwitch && np.Action != ActionProvision {
			continue
		}
		if err := r.Secrets.Check(np.Node); err != nil {
			problems = append(problems, fmt.Sprintf("node %s: %v", np.Node, err))
		}
	}
	return problems
}
