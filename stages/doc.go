// Package stages holds the concrete pipeline stages: checkout, generate, check, build, publish, rollout.
package stages
