package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// ErrConflict means a compare-and-set lost: the value changed since the revision the caller read.
var ErrConflict = errors.New("revision conflict")

// NodeState is what is deployed on a node.
type NodeState struct {
	// Node is the node's name, an RFC 1123 label in lower case; it is the key.
	Node     string `json:"node"`
	Commit   string `json:"commit"`
	Toplevel string `json:"toplevel"`
	// Generation is the NixOS system profile generation the switch created.
	Generation int       `json:"generation"`
	Deployed   time.Time `json:"deployed"`
	RunID      string    `json:"run_id"`

	// FailedCommit is the last commit whose switch failed on this node (and was rolled back); the
	// rollout does not try it again until a newer commit comes. A successful switch clears the
	// Failed fields. The fields above keep describing what is deployed.
	FailedCommit   string    `json:"failed_commit,omitempty"`
	FailedToplevel string    `json:"failed_toplevel,omitempty"`
	FailedAt       time.Time `json:"failed_at,omitzero"`
	FailedRunID    string    `json:"failed_run_id,omitempty"`
	FailedReason   string    `json:"failed_reason,omitempty"`
}

// Node returns the state of a node and its revision. A node never deployed has revision 0 and a
// zero state (with Node set), so a read-modify-write loop needs no special case.
func (s *Store) Node(ctx context.Context, name string) (NodeState, uint64, error) {
	if err := checkNodeName(name); err != nil {
		return NodeState{}, 0, err
	}
	entry, err := s.nodes.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return NodeState{Node: name}, 0, nil
	}
	if err != nil {
		return NodeState{}, 0, fmt.Errorf("node %s: %w", name, err)
	}
	var st NodeState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		return NodeState{}, 0, fmt.Errorf("node %s: decode: %w", name, err)
	}
	return st, entry.Revision(), nil
}

// PutNode stores st under st.Node if the node's revision is still expected (0: the node has no
// state yet) and returns the new revision. When another writer got there first it returns an error
// matching ErrConflict; read the node again and retry.
func (s *Store) PutNode(ctx context.Context, st NodeState, expected uint64) (uint64, error) {
	if err := checkNodeName(st.Node); err != nil {
		return 0, err
	}
	st.FailedReason = pipeline.Truncate(st.FailedReason, pipeline.MaxErrorBytes)
	value, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("node %s: encode: %w", st.Node, err)
	}
	var rev uint64
	if expected == 0 {
		rev, err = s.nodes.Create(ctx, st.Node, value)
	} else {
		rev, err = s.nodes.Update(ctx, st.Node, value, expected)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("node %s: revision %d is not the latest: %w (%w)", st.Node, expected, ErrConflict, err)
	}
	if err != nil {
		return 0, fmt.Errorf("node %s: %w", st.Node, err)
	}
	return rev, nil
}

// NodeHistory returns the states the node had, oldest first, the current one last: at most the
// bucket's history (10). A node never deployed has none. With it a generation's toplevel maps back to
// the commit it was deployed from, also when the system does not name its revision.
func (s *Store) NodeHistory(ctx context.Context, name string) ([]NodeState, error) {
	if err := checkNodeName(name); err != nil {
		return nil, err
	}
	entries, err := s.nodes.History(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node %s history: %w", name, err)
	}
	var out []NodeState
	for _, e := range entries {
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		var st NodeState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return nil, fmt.Errorf("node %s history revision %d: decode: %w", name, e.Revision(), err)
		}
		out = append(out, st)
	}
	return out, nil
}
