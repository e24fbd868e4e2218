package rollout_test

import (
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/rollout"
)

// TestLabDeadManTimerIsOnTime arms the dead-man timer with a 3 s confirm timeout on a node whose
// timers coalesce 40 s from now: systemd's default AccuracySec=1min would let the timer elapse there,
// far too late for a rollback. The timer cimdeploy arms is scheduled within 100 ms of its timeout.
func TestLabDeadManTimerIsOnTime(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	n := w.l.Node("nats-1")
	if err := n.PlaceTimerSpot(time.Now().Add(40 * time.Second)); err != nil {
		t.Fatal(err)
	}
	sys := w.systems["nats-1"]
	gens, err := sys.Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cur := rollout.CurrentGeneration(gens)
	const confirm = 3 * time.Second
	id := uniqueID(t)
	// Back to and on to the current generation: the profile does not change.
	if _, err := sys.Arm(ctx, id, confirm, cur, rollout.Generation{Number: cur.Number}); err != nil {
		t.Fatal(err)
	}
	started, elapse, ok := n.TimerSchedule("cimdeploy-rollback-" + id + ".timer")
	claimed, err := sys.Disarm(ctx, id)
	if err != nil || !claimed {
		t.Fatalf("Disarm = %v, %v", claimed, err)
	}
	if !ok {
		t.Fatal("no dead-man timer on the node after Arm")
	}
	if d := elapse.Sub(started); d < confirm || d > confirm+100*time.Millisecond {
		t.Errorf("the dead-man timer elapses %s after it was armed, want %s to %s", d, confirm, confirm+100*time.Millisecond)
	}
}
