package pipeline

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// Trigger is what started a run.
type Trigger string

// Triggers.
const (
	TriggerPush        Trigger = "push"
	TriggerPullRequest Trigger = "pull_request"
	TriggerManual      Trigger = "manual"
)

// Kind is what a run may do: validate stops after the build; deploy goes on to the nodes.
type Kind string

// Kinds.
const (
	KindDeploy   Kind = "deploy"
	KindValidate Kind = "validate"
)

// Run is one pass of the pipeline over one commit. Stages read and write its fields; the runner passes
// it explicitly (never through a context). Fields a stage writes are read only by later stages, so a
// Run needs no lock as long as parallel work inside a stage writes through the StageRun.
type Run struct {
	ID      string  `json:"id"`
	Repo    string  `json:"repo"`
	Ref     string  `json:"ref"`
	Commit  string  `json:"commit"`
	Trigger Trigger `json:"trigger"`
	Kind    Kind    `json:"kind"`

	// Workspace is the checked-out tree of Commit (set by the checkout stage).
	Workspace string `json:"workspace,omitempty"`
	// Nodes are the nodes the projection names, sorted (set by the generate stage).
	Nodes []string `json:"nodes,omitempty"`
	// Drift is the unified diff between the committed Nix and the projection, empty when none.
	Drift string `json:"drift,omitempty"`
	// Artifacts are the built store paths per node (set by the build stage).
	Artifacts map[string]Artifact `json:"artifacts,omitempty"`
	// Templates are the nodes' LXC templates on Proxmox, as pct create takes them
	// (local:vztmpl/nats-1-<sha256>.tar.xz), set by the publish stage.
	Templates map[string]string `json:"templates,omitempty"`
}

// record is the copy of r that results and events carry, its drift bounded (MaxDriftBytes).
func (r *Run) record() Run {
	c := *r
	c.Drift = Truncate(r.Drift, MaxDriftBytes)
	return c
}

// Artifact is what the build stage produced for one node.
type Artifact struct {
	Toplevel string `json:"toplevel"`
	Tarball  string `json:"tarball"`
	// Cached is true when both outputs were already in the store and nothing was built.
	Cached bool `json:"cached"`
}

// NewRunID returns a new, sortable run id: UTC time plus random bits.
func NewRunID() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}
