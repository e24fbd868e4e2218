package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// NodeState is the rollout's record of a node: what is deployed on it, and the last commit that
// failed there. It is stored as JSON under the node's name (pipeline/store's node records).
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

	// Removed is when the rollout took the node out of the cluster after the events removed it
	// (zero: it was not); the record stays, and the store keeps its history. Destroyed says whether
	// its container was destroyed too (--destroy-removed).
	Removed      time.Time `json:"removed,omitzero"`
	RemovedRunID string    `json:"removed_run_id,omitempty"`
	Destroyed    bool      `json:"destroyed,omitempty"`

	// Test is the test activation the node runs (ModeTest), nil when it runs its boot default.
	Test *TestActivation `json:"test,omitempty"`
}

// States is where the rollout reads and records the NodeState of each node, as JSON records with a
// revision; *store.Store is one. PutNodeRecord returns an error matching store.ErrConflict when the
// record changed since revision expected (0: no record yet).
type States interface {
	NodeRecord(ctx context.Context, name string) ([]byte, uint64, error)
	PutNodeRecord(ctx context.Context, name string, record []byte, expected uint64) (uint64, error)
}

var _ States = (*store.Store)(nil)

// ReadState returns the NodeState of node name and its revision. A node never recorded has revision 0
// and a zero state with Node set.
func ReadState(ctx context.Context, states States, name string) (NodeState, uint64, error) {
	raw, rev, err := states.NodeRecord(ctx, name)
	if err != nil {
		return NodeState{}, 0, err
	}
	st := NodeState{Node: name}
	if raw == nil {
		return st, rev, nil
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return NodeState{}, 0, fmt.Errorf("node %s: decode its record: %w", name, err)
	}
	return st, rev, nil
}

// WriteState stores st under st.Node if the record's revision is still expected and returns the new
// revision; a lost race is an error matching store.ErrConflict. A long FailedReason is cut.
func WriteState(ctx context.Context, states States, st NodeState, expected uint64) (uint64, error) {
	st.FailedReason = pipeline.Truncate(st.FailedReason, pipeline.MaxErrorBytes)
	raw, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("node %s: encode its record: %w", st.Node, err)
	}
	return states.PutNodeRecord(ctx, st.Node, raw, expected)
}

// History is where the past records of a node are kept; *store.Store is one.
type History interface {
	NodeRecordHistory(ctx context.Context, name string) ([][]byte, error)
}

var _ History = (*store.Store)(nil)

// StateHistory returns the states node name had, oldest first, the current one last (pipeline/store
// keeps 10). With it a generation's toplevel maps back to the commit it was deployed from, also when
// the system does not name its revision.
func StateHistory(ctx context.Context, h History, name string) ([]NodeState, error) {
	raws, err := h.NodeRecordHistory(ctx, name)
	if err != nil {
		return nil, err
	}
	out := make([]NodeState, 0, len(raws))
	for i, raw := range raws {
		var st NodeState
		if err := json.Unmarshal(raw, &st); err != nil {
			return nil, fmt.Errorf("node %s: decode its record %d of %d: %w", name, i+1, len(raws), err)
		}
		out = append(out, st)
	}
	return out, nil
}

// isConflict reports whether a write lost a race.
func isConflict(err error) bool { return errors.Is(err, store.ErrConflict) }
