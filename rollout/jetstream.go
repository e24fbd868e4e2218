package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
)

// MetaRemover is a Cluster that can take a server out of the JetStream meta group, for a node the
// events removed. NATS implements it.
type MetaRemover interface {
	// CanRemove is nil when RemoveServer can work (NATS: system account credentials are set).
	CanRemove() error
	// StreamsOn lists the streams with a replica on node's server, each with how many current copies
	// it has on other servers.
	StreamsOn(ctx context.Context, node string) ([]StreamCopy, error)
	// MetaPeers are the servers of the JetStream meta group as via's server knows it, sorted.
	MetaPeers(ctx context.Context, via string) ([]string, error)
	// RemoveServer asks the meta leader, through via's server, to take server out of the meta group.
	RemoveServer(ctx context.Context, via, server string) error
}

var _ MetaRemover = (*NATS)(nil)

// StreamCopy is a stream with a replica on one server.
type StreamCopy struct {
	Account  string `json:"account"`
	Stream   string `json:"stream"`
	Replicas int    `json:"replicas"` // the stream's configured replicas (num_replicas)
	// Elsewhere counts the current copies on other servers: the leader, when another server leads
	// it, and each replica that is current and not offline. Seen from a follower it is a lower bound
	// (at least 1: the leader), since only a stream's leader tracks whether its replicas are current.
	Elsewhere int `json:"elsewhere"`
}

// String is account/stream (R n).
func (s StreamCopy) String() string {
	return fmt.Sprintf("%s/%s (R%d, %d current copies elsewhere)", s.Account, s.Stream, s.Replicas, s.Elsewhere)
}

// OnlyCopies are the streams whose only current copy is on the server: removing it loses them.
func OnlyCopies(streams []StreamCopy) []StreamCopy {
	var out []StreamCopy
	for _, s := range streams {
		if s.Elsewhere == 0 {
			out = append(out, s)
		}
	}
	return out
}

// jszStreams is the part of /jsz?accounts=true&streams=true&config=true that StreamsOn and Settled
// read (nats-server's monitor.go: JSInfo, AccountDetail, StreamDetail, ClusterInfo, PeerInfo).
type jszStreams struct {
	Accounts []struct {
		Name    string `json:"name"`
		Streams []struct {
			Name   string `json:"name"`
			Config *struct {
				Replicas int `json:"num_replicas"`
			} `json:"config"`
			Cluster *struct {
				Leader   string `json:"leader"`
				Replicas []struct {
					Name    string `json:"name"`
					Current bool   `json:"current"`
					Offline bool   `json:"offline"`
					Lag     uint64 `json:"lag"`
				} `json:"replicas"`
			} `json:"cluster"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

// streamDetails is node's /jsz with every account's streams, their configuration and cluster info.
func (n *NATS) streamDetails(ctx context.Context, node string) (jszStreams, error) {
	var jsz jszStreams
	srv, err := n.server(node)
	if err != nil {
		return jsz, err
	}
	err = n.getJSON(ctx, srv.Monitor+"/jsz?accounts=true&streams=true&config=true", &jsz)
	return jsz, err
}

// CanRemove implements MetaRemover: $JS.API.SERVER.REMOVE is answered only on the system account
// (nats-server server/jetstream_cluster.go subscribes it with systemSubscribe, on the meta leader).
func (n *NATS) CanRemove() error {
	if !n.authenticates() {
		return errors.New("taking a server out of the JetStream meta group needs the NATS system account " +
			"($JS.API.SERVER.REMOVE is answered only there): set CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE, " +
			"CIMDEPLOY_ROLLOUT_SYSTEM_CREDS_FILE, or CIMDEPLOY_ROLLOUT_SYSTEM_USER and CIMDEPLOY_ROLLOUT_SYSTEM_PASSWORD_FILE")
	}
	return nil
}

// StreamsOn implements MetaRemover with node's /jsz?accounts=true&streams=true: a server reports the
// streams it holds, each with its cluster info seen from there (the leader, and the other replicas
// with current and offline; nats-server's clusterInfo leaves the server itself out).
func (n *NATS) StreamsOn(ctx context.Context, node string) ([]StreamCopy, error) {
	jsz, err := n.streamDetails(ctx, node)
	if err != nil {
		return nil, err
	}
	var out []StreamCopy
	for _, acc := range jsz.Accounts {
		for _, st := range acc.Streams {
			c := StreamCopy{Account: acc.Name, Stream: st.Name, Replicas: 1}
			if st.Config != nil && st.Config.Replicas > 0 {
				c.Replicas = st.Config.Replicas
			}
			if ci := st.Cluster; ci != nil {
				if ci.Leader != "" && ci.Leader != node {
					c.Elsewhere++
				}
				for _, r := range ci.Replicas {
					if r.Name != node && r.Name != ci.Leader && r.Current && !r.Offline {
						c.Elsewhere++
					}
				}
			}
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b StreamCopy) int {
		return strings.Compare(a.Account+"/"+a.Stream, b.Account+"/"+b.Stream)
	})
	return out, nil
}

// MetaPeers implements MetaRemover with /jsz meta_cluster (its leader and replicas) of the meta leader
// that via's server names: only the leader's view lists every peer for sure (a follower's raft does
// not track the others, and during an election a view lacks peers). No leader, or one that does not
// answer as the leader, is an error.
func (n *NATS) MetaPeers(ctx context.Context, via string) ([]string, error) {
	_, leader, err := n.metaView(ctx, via)
	switch {
	case err != nil:
		return nil, err
	case leader == "":
		return nil, fmt.Errorf("/jsz of %s: no JetStream meta leader", via)
	}
	peers, l, err := n.metaView(ctx, leader)
	switch {
	case err != nil:
		return nil, fmt.Errorf("meta leader %s (named by %s): %w", leader, via, err)
	case l != leader:
		return nil, fmt.Errorf("meta leader %s (named by %s) names %q as the leader", leader, via, l)
	}
	return peers, nil
}

// metaView is the meta group as node's /jsz tells it: node, its leader and replicas, sorted.
func (n *NATS) metaView(ctx context.Context, node string) ([]string, string, error) {
	srv, err := n.server(node)
	if err != nil {
		return nil, "", err
	}
	var jsz struct {
		Meta *struct {
			Leader   string `json:"leader"`
			Replicas []struct {
				Name string `json:"name"`
			} `json:"replicas"`
		} `json:"meta_cluster"`
	}
	if err := n.getJSON(ctx, srv.Monitor+"/jsz", &jsz); err != nil {
		return nil, "", err
	}
	if jsz.Meta == nil {
		return nil, "", fmt.Errorf("/jsz of %s: no JetStream meta group", node)
	}
	peers := []string{node}
	if jsz.Meta.Leader != "" {
		peers = append(peers, jsz.Meta.Leader)
	}
	for _, r := range jsz.Meta.Replicas {
		peers = append(peers, r.Name)
	}
	slices.Sort(peers)
	return slices.Compact(peers), jsz.Meta.Leader, nil
}

// RemoveServer implements MetaRemover: a request on $JS.API.SERVER.REMOVE with {"peer": server} (the
// server's name; nats-server's JSApiMetaServerRemoveRequest) in the system account, through via's
// server. Only the meta leader answers; an error in the answer (the server is no member, ...) is
// returned with its description.
func (n *NATS) RemoveServer(ctx context.Context, via, server string) error {
	if err := n.CanRemove(); err != nil {
		return err
	}
	srv, err := n.server(via)
	if err != nil {
		return err
	}
	auth, err := n.authOptions()
	if err != nil {
		return err
	}
	opts := append([]nats.Option{nats.Name("cimdeploy node removal"), nats.Timeout(n.timeout()), nats.NoReconnect()}, auth...)
	nc, err := nats.Connect(srv.Client, opts...)
	if err != nil {
		return fmt.Errorf("system account at %s: %w", srv.Client, err)
	}
	defer nc.Close()
	body, err := json.Marshal(map[string]string{"peer": server})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout())
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, "$JS.API.SERVER.REMOVE", body)
	if err != nil {
		return fmt.Errorf("$JS.API.SERVER.REMOVE %s: %w (no meta leader answered)", server, err)
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("$JS.API.SERVER.REMOVE %s: answer: %w", server, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("$JS.API.SERVER.REMOVE %s: %s (code %d, err_code %d)", server, resp.Error.Description, resp.Error.Code, resp.Error.ErrCode)
	}
	if !resp.Success {
		return fmt.Errorf("$JS.API.SERVER.REMOVE %s: the meta leader did not confirm", server)
	}
	return nil
}
