package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The control state is what operators say to every cimdeploy process sharing the store: whether
// deploys are paused, and the approval decisions of runs that wait for one. It lives in the bucket
// cimdeploy_control, key "pause" and keys "decision.<run-id>", without TTL: a pause holds until
// Resume; a decision is read once by the run waiting for it.

const (
	pauseKey       = "pause"
	decisionPrefix = "decision."
	// maxControlText bounds who and why, as the people typing them see them in a status.
	maxControlText = 1024
)

// PauseState says who paused deploys, why and when.
type PauseState struct {
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
}

// Decision is an operator's answer to a run waiting for approval.
type Decision struct {
	Run      string    `json:"run"`
	Approved bool      `json:"approved"`
	By       string    `json:"by"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
}

// Pause holds every deploy not yet started until Resume, in every process sharing the store;
// validations go on and a running deploy finishes. Pausing again replaces who and why.
func (s *Store) Pause(ctx context.Context, by, reason string) error {
	if err := checkControlText("pause: by", by, true); err != nil {
		return err
	}
	if err := checkControlText("pause: reason", reason, false); err != nil {
		return err
	}
	kv, err := s.control(ctx)
	if err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	data, err := json.Marshal(PauseState{By: by, Reason: reason, Since: time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	if _, err := kv.Put(ctx, pauseKey, data); err != nil {
		return fmt.Errorf("pause: bucket %s: %w", BucketControl, err)
	}
	return nil
}

// Resume lets deploys start again. Resuming when not paused does nothing.
func (s *Store) Resume(ctx context.Context) error {
	kv, err := s.control(ctx)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := kv.Delete(ctx, pauseKey); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("resume: bucket %s: %w", BucketControl, err)
	}
	return nil
}

// Paused reports whether deploys are paused, and by whom.
func (s *Store) Paused(ctx context.Context) (PauseState, bool, error) {
	kv, err := s.control(ctx)
	if err != nil {
		return PauseState{}, false, fmt.Errorf("pause state: %w", err)
	}
	entry, err := kv.Get(ctx, pauseKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return PauseState{}, false, nil
	}
	if err != nil {
		return PauseState{}, false, fmt.Errorf("pause state: bucket %s: %w", BucketControl, err)
	}
	var st PauseState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		return PauseState{}, false, fmt.Errorf("pause state: decode: %w", err)
	}
	return st, true, nil
}

// Approve records that by approves run. The run must be known to the store and not finished; the
// first decision of a run stands: a second one (approve or reject) fails and names the first.
func (s *Store) Approve(ctx context.Context, runID, by string) error {
	return s.decide(ctx, Decision{Run: runID, Approved: true, By: by})
}

// Reject records that by rejects run, and why; see Approve for the rules.
func (s *Store) Reject(ctx context.Context, runID, by, reason string) error {
	if err := checkControlText("reject run "+runID+": reason", reason, false); err != nil {
		return err
	}
	return s.decide(ctx, Decision{Run: runID, By: by, Reason: reason})
}

func (s *Store) decide(ctx context.Context, d Decision) error {
	verb := "reject"
	if d.Approved {
		verb = "approve"
	}
	if !token.MatchString(d.Run) {
		return fmt.Errorf("%s run %q: invalid run id", verb, d.Run)
	}
	if err := checkControlText(verb+" run "+d.Run+": by", d.By, true); err != nil {
		return err
	}
	sum, ok, err := s.Run(ctx, d.Run)
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	if !ok {
		return fmt.Errorf("%s run %s: no such run", verb, d.Run)
	}
	if sum.Status.Final() {
		return fmt.Errorf("%s run %s: the run is already %s", verb, d.Run, sum.Status)
	}
	kv, err := s.control(ctx)
	if err != nil {
		return fmt.Errorf("%s run %s: %w", verb, d.Run, err)
	}
	d.At = time.Now().UTC()
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("%s run %s: %w", verb, d.Run, err)
	}
	if _, err := kv.Create(ctx, decisionPrefix+d.Run, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			if first, ferr := s.decision(ctx, kv, d.Run); ferr == nil {
				return fmt.Errorf("%s run %s: already %s by %s", verb, d.Run, first.verb(), first.By)
			}
			return fmt.Errorf("%s run %s: already decided", verb, d.Run)
		}
		return fmt.Errorf("%s run %s: bucket %s: %w", verb, d.Run, BucketControl, err)
	}
	return nil
}

// verb is "approved" or "rejected".
func (d Decision) verb() string {
	if d.Approved {
		return "approved"
	}
	return "rejected"
}

func (s *Store) decision(ctx context.Context, kv jetstream.KeyValue, runID string) (Decision, error) {
	entry, err := kv.Get(ctx, decisionPrefix+runID)
	if err != nil {
		return Decision{}, err
	}
	var d Decision
	if err := json.Unmarshal(entry.Value(), &d); err != nil {
		return Decision{}, fmt.Errorf("decision of run %s: decode: %w", runID, err)
	}
	return d, nil
}

// WaitDecision returns the decision on run as soon as one is recorded (at once if it already is),
// watching the bucket rather than polling it. It returns ctx's error when ctx ends first.
func (s *Store) WaitDecision(ctx context.Context, runID string) (Decision, error) {
	if !token.MatchString(runID) {
		return Decision{}, fmt.Errorf("wait for the decision on run %q: invalid run id", runID)
	}
	kv, err := s.control(ctx)
	if err != nil {
		return Decision{}, fmt.Errorf("wait for the decision on run %s: %w", runID, err)
	}
	watch, err := kv.Watch(ctx, decisionPrefix+runID)
	if err != nil {
		return Decision{}, fmt.Errorf("wait for the decision on run %s: watch bucket %s: %w", runID, BucketControl, err)
	}
	defer watch.Stop()
	for {
		select {
		case <-ctx.Done():
			return Decision{}, context.Cause(ctx)
		case entry, ok := <-watch.Updates():
			if !ok {
				if err := ctx.Err(); err != nil {
					return Decision{}, context.Cause(ctx)
				}
				return Decision{}, fmt.Errorf("wait for the decision on run %s: the watch of bucket %s ended", runID, BucketControl)
			}
			if entry == nil || entry.Operation() != jetstream.KeyValuePut {
				continue // nil: the end of the values already stored
			}
			var d Decision
			if err := json.Unmarshal(entry.Value(), &d); err != nil {
				return Decision{}, fmt.Errorf("decision of run %s: decode: %w", runID, err)
			}
			return d, nil
		}
	}
}

// control returns the control bucket, creating it on first use.
func (s *Store) control(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := s.js.KeyValue(ctx, BucketControl)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("bucket %s: %w", BucketControl, err)
	}
	kv, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketControl,
		Description: "cimdeploy: pause state and approval decisions",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", BucketControl, err)
	}
	return kv, nil
}

// checkControlText bounds an operator's name or reason, which end up in statuses and logs.
func checkControlText(what, text string, required bool) error {
	switch {
	case required && strings.TrimSpace(text) == "":
		return fmt.Errorf("%s: empty", what)
	case len(text) > maxControlText:
		return fmt.Errorf("%s: %d bytes, want at most %d", what, len(text), maxControlText)
	case strings.ContainsAny(text, "\x00\r\n"):
		return fmt.Errorf("%s: contains a line break or NUL", what)
	}
	return nil
}
