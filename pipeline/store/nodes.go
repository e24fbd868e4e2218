package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrConflict means a compare-and-set lost: the value changed since the revision the caller read.
var ErrConflict = errors.New("revision conflict")

// A node record is what its owner (the rollout's rollout.NodeState) says about a node, stored as
// the owner encoded it (JSON) under the node's name in BucketNodes. The store keeps the record's
// history and guards concurrent writers with revisions; it does not read the record.

// MaxNodeRecord bounds a node record.
const MaxNodeRecord = 64 << 10

// NodeRecord returns the record of node name and its revision. A node without a record has a nil
// record and revision 0, so a read-modify-write loop needs no special case.
func (s *Store) NodeRecord(ctx context.Context, name string) ([]byte, uint64, error) {
	if err := checkNodeName(name); err != nil {
		return nil, 0, err
	}
	entry, err := s.nodes.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("node %s: %w", name, err)
	}
	return entry.Value(), entry.Revision(), nil
}

// PutNodeRecord stores record under node name if the node's revision is still expected (0: the node
// has no record yet) and returns the new revision. When another writer got there first it returns an
// error matching ErrConflict; read the node again and retry.
func (s *Store) PutNodeRecord(ctx context.Context, name string, record []byte, expected uint64) (uint64, error) {
	if err := checkNodeName(name); err != nil {
		return 0, err
	}
	if len(record) > MaxNodeRecord {
		return 0, fmt.Errorf("node %s: a record of %d bytes is over %d", name, len(record), MaxNodeRecord)
	}
	var (
		rev uint64
		err error
	)
	if expected == 0 {
		rev, err = s.nodes.Create(ctx, name, record)
	} else {
		rev, err = s.nodes.Update(ctx, name, record, expected)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("node %s: revision %d is not the latest: %w (%w)", name, expected, ErrConflict, err)
	}
	if err != nil {
		return 0, fmt.Errorf("node %s: %w", name, err)
	}
	return rev, nil
}

// NodeRecordHistory returns the records node name had, oldest first, the current one last: at most
// the bucket's history (10). A node never recorded has none.
func (s *Store) NodeRecordHistory(ctx context.Context, name string) ([][]byte, error) {
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
	var out [][]byte
	for _, e := range entries {
		if e.Operation() == jetstream.KeyValuePut {
			out = append(out, e.Value())
		}
	}
	return out, nil
}
