package rollout_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// connectAs connects to node's server as one of the lab's users; async errors (permissions
// violations) go to errs.
func connectAs(t *testing.T, l *lab.Lab, node, user string, errs chan<- error) *nats.Conn {
	t.Helper()
	auth, err := l.NkeyOption(user)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(l.Node(node).ClientURL(), auth, nats.Name("accounts test "+user), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("%s on %s: %v", user, node, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// nextErr waits for an async error of the connection.
func nextErr(t *testing.T, errs <-chan error) error {
	t.Helper()
	select {
	case err := <-errs:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no async error within 5s")
		return nil
	}
}

// TestLabAccounts runs the lab's accounts (its events: domains lab and audit, their users, lab's
// exported events stream imported by audit, the system user) against the real cluster.
func TestLabAccounts(t *testing.T) {
	w := newLabWorld(t)
	l := w.l
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	t.Run("a client without a user is refused", func(t *testing.T) {
		nc, err := nats.Connect(l.Node("nats-1").ClientURL(), nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Fatal("an anonymous client connected")
		}
		if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(err.Error(), "Authorization Violation") {
			t.Errorf("anonymous client: %v, want an authorization violation", err)
		}
	})

	t.Run("a domain user publishes on its own subjects only", func(t *testing.T) {
		errs := make(chan error, 4)
		nc := connectAs(t, l, "nats-1", lab.ServiceUser, errs)
		sub, err := nc.SubscribeSync("lab.orders.>")
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish("lab.orders.1", []byte("mine")); err != nil {
			t.Fatal(err)
		}
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil || string(msg.Data) != "mine" {
			t.Fatalf("own subject: %v, %v", msg, err)
		}
		if err := nc.Publish("audit.orders.1", []byte("theirs")); err != nil {
			t.Fatal(err)
		}
		if err := nextErr(t, errs); !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), `Publish to "audit.orders.1"`) {
			t.Errorf("publish elsewhere: %v, want a permissions violation", err)
		}
		if _, err := nc.SubscribeSync("audit.>"); err != nil {
			t.Fatal(err)
		}
		if err := nextErr(t, errs); !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), `Subscription to "audit.>"`) {
			t.Errorf("subscribe elsewhere: %v, want a permissions violation", err)
		}
	})

	t.Run("an import crosses domains and servers", func(t *testing.T) {
		errs := make(chan error, 4)
		pub := connectAs(t, l, "nats-1", lab.AdminUser, errs)
		peer := connectAs(t, l, "nats-2", lab.PeerUser, errs)
		sub, err := peer.SubscribeSync(lab.PeerPrefix + ".lab.events.>")
		if err != nil {
			t.Fatal(err)
		}
		if err := peer.Flush(); err != nil {
			t.Fatal(err)
		}
		// The subscription's interest reaches nats-1 over the route soon after; publish until it has.
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := pub.Publish("lab.events.order-created", []byte("order 1")); err != nil {
				t.Fatal(err)
			}
			msg, err := sub.NextMsg(100 * time.Millisecond)
			if err == nil {
				if msg.Subject != lab.PeerPrefix+".lab.events.order-created" || string(msg.Data) != "order 1" {
					t.Errorf("imported message %s %q", msg.Subject, msg.Data)
				}
				break
			}
			select {
			case <-ctx.Done():
				t.Fatal("domain audit never received lab's event")
			case err := <-errs:
				t.Fatalf("async error: %v", err)
			case <-tick.C:
			}
		}
	})

	t.Run("the gate's ping answers from every server", func(t *testing.T) {
		c, ok := w.r.Cluster.(*rollout.NATS)
		if !ok {
			t.Fatalf("cluster %T", w.r.Cluster)
		}
		if c.NkeyFile != l.NkeyFile(lab.SystemUser) {
			t.Errorf("the gate authenticates with %q", c.NkeyFile)
		}
		for _, n := range l.Nodes() {
			names, err := c.Ping(ctx, n.Name(), len(l.Nodes()))
			if err != nil || len(names) != len(l.Nodes()) {
				t.Errorf("ping through %s: %v, %v; want every server", n.Name(), names, err)
			}
			if err := c.Health(ctx, n.Name(), len(l.Nodes())-1); err != nil {
				t.Errorf("health of %s: %v", n.Name(), err)
			}
		}
	})
}
