package store

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream is the store's JetStream context, for the parts of cimdeploy that keep their own streams
// on the same connection (pipeline/queue). It stays valid until Close.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Conn is the store's NATS connection. It belongs to the store: do not close or drain it.
func (s *Store) Conn() *nats.Conn { return s.nc }
