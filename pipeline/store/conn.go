package store

import (
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream is the store's JetStream context, for the parts of cimdeploy that keep their own streams
// on the same connection (pipeline/queue). It stays valid until Close.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Conn is the store's NATS connection. It belongs to the store: do not close or drain it.
func (s *Store) Conn() *nats.Conn { return s.nc }

// ListenURL is the nats:// URL on which the embedded server accepts clients (Config.Listen), with
// the token they need (nats://TOKEN@host:port: a secret, never to be logged), for other processes to
// connect with Config.URL; empty with an external URL or without a listener. Commands given the same
// DataDir need no URL: they find the server through the data directory's lock file.
func (s *Store) ListenURL() string {
	if s.srv == nil || s.srv.Addr() == nil {
		return ""
	}
	u := s.srv.ClientURL()
	return strings.Replace(u, "nats://", "nats://"+s.token+"@", 1)
}
