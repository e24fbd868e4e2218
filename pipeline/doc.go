// Package pipeline plans and runs a deployment: a Run goes through stages in series, the work inside a
// stage runs in parallel, and every state change is an event.
package pipeline
