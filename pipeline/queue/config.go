package queue

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Defaults of Config, applied by Open to zero fields.
const (
	DefaultMaxValidations = 2
	DefaultDeployLease    = time.Minute
	DefaultAckWait        = 30 * time.Second
	DefaultDedupeWindow   = 72 * time.Hour
	DefaultPausePoll      = 5 * time.Second
	DefaultMaxJobs        = 10000
)

// Config says how the queue hands out jobs. Every field but Paused is also a CIMDEPLOY_* variable
// (github.com/sethvargo/go-envconfig); the zero value gets the defaults.
type Config struct {
	// MaxValidations bounds the validations one process runs at once.
	MaxValidations int `env:"CIMDEPLOY_QUEUE_MAX_VALIDATIONS, default=2"`
	// DeployLease is how long the deploy lock lives unrenewed: the holder renews it every third of
	// it while its deploy runs; a process that is gone loses it after at most this long.
	DeployLease time.Duration `env:"CIMDEPLOY_QUEUE_DEPLOY_LEASE, default=1m"`
	// AckWait is how long a taken job may go without a sign of life from its process before JetStream
	// hands it to another: the runner signals every third of it, so a killed process's job is run
	// again after at most AckWait.
	AckWait time.Duration `env:"CIMDEPLOY_QUEUE_ACK_WAIT, default=30s"`
	// DedupeWindow is how long a delivery id is remembered: the same delivery again within it is a
	// duplicate (GitHub lets operators redeliver deliveries up to 3 days old).
	DedupeWindow time.Duration `env:"CIMDEPLOY_QUEUE_DEDUPE_WINDOW, default=72h"`
	// Replicas of the stream and buckets on an external cluster (1-5); the embedded server keeps 1.
	Replicas int `env:"CIMDEPLOY_NATS_REPLICAS, default=1"`
	// MaxJobs bounds the jobs stored and not yet handled; past it Enqueue fails (a flood of
	// deliveries fills no disk).
	MaxJobs int `env:"CIMDEPLOY_QUEUE_MAX_JOBS, default=10000"`
	// PausePoll is how often a paused queue asks Paused again.
	PausePoll time.Duration `env:"CIMDEPLOY_QUEUE_PAUSE_POLL, default=5s"`

	// Paused, when set, is asked before each deploy is taken: while it says true, deploy jobs stay
	// queued (validations still run). An error counts as paused and is logged: no deploy starts
	// while cimdeploy cannot tell. Typically (*store.Store).Paused.
	Paused func(ctx context.Context) (bool, error)
}

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if c.MaxValidations == 0 {
		c.MaxValidations = DefaultMaxValidations
	}
	if c.DeployLease == 0 {
		c.DeployLease = DefaultDeployLease
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.DedupeWindow == 0 {
		c.DedupeWindow = DefaultDedupeWindow
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.PausePoll == 0 {
		c.PausePoll = DefaultPausePoll
	}
	if c.MaxJobs == 0 {
		c.MaxJobs = DefaultMaxJobs
	}
	return c
}

// Validate reports every problem of c (after defaults) at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.MaxValidations < 1 {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_QUEUE_MAX_VALIDATIONS %d: want at least 1", c.MaxValidations))
	}
	if c.DeployLease < 300*time.Millisecond {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_QUEUE_DEPLOY_LEASE %v: want at least 300ms", c.DeployLease))
	}
	if c.AckWait < 300*time.Millisecond {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_QUEUE_ACK_WAIT %v: want at least 300ms", c.AckWait))
	}
	if c.DedupeWindow < time.Minute {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_QUEUE_DEDUPE_WINDOW %v: want at least 1m", c.DedupeWindow))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_NATS_REPLICAS %d: want 1 to 5", c.Replicas))
	}
	if c.MaxJobs < 1 {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_QUEUE_MAX_JOBS %d: want at least 1", c.MaxJobs))
	}
	if c.PausePoll <= 0 {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_QUEUE_PAUSE_POLL %v: want a positive duration", c.PausePoll))
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.Join(errs...)
}
