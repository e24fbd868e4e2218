package daemon

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fleet"
)

// TestFleetPage: the fleet page shows every node's generation, commit, health and drift and the
// problems the observation found, escaped; an observation that fails is said, not a blank page.
func TestFleetPage(t *testing.T) {
	desired := strings.Repeat("d", 40)
	f := &fleet.Fleet{Desired: desired, Leader: "nats-1", Observed: time.Now(), Nodes: []fleet.Node{
		{Node: "nats-1", Reachable: true, Generation: 3, Commit: desired, Desired: desired, AtDesired: true, Healthy: true, Leader: true},
		{Node: "nats-2", Reachable: true, Generation: 2, Commit: strings.Repeat("a", 40), Desired: desired, Drifted: true,
			Problems: []string{`switched by hand: it runs /nix/store/x-<script>alert(1)</script>`}},
		{Node: "nats-3", Desired: desired, Problems: []string{"unreachable: connection refused"}},
	}}
	var fail error
	obs := fleet.ObserveFunc(func(context.Context) (*fleet.Fleet, error) { return f, fail })
	mux := http.NewServeMux()
	fleetView{obs: obs, render: pages{}.render}.register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func() string {
		resp, err := http.Get(srv.URL + "/fleet")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	body := get()
	for _, want := range []string{"nats-1 (leader)", "healthy", "switched by hand", "not at desired", "unreachable", "&lt;script&gt;", "dddddddddddd"} {
		if !strings.Contains(body, want) {
			t.Errorf("fleet page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>alert") {
		t.Error("the fleet page carries a problem's markup unescaped")
	}
	f, fail = nil, errors.New("open the cluster: repository unreachable")
	if body := get(); !strings.Contains(body, "the fleet could not be observed: open the cluster: repository unreachable") {
		t.Errorf("a failed observation is not said:\n%s", body)
	}
}
