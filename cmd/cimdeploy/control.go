package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"

	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"

	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// controlOptions configure the commands that steer serve through the state store: pause, resume,
// approve, reject.
type controlOptions struct {
	Store  store.Config
	reason string
}

// newControlCommand makes one of them; do acts on the open store with the command's arguments.
func newControlCommand(g *globalOptions, use, short, long string, args cobra.PositionalArgs,
	do func(ctx context.Context, st *store.Store, opts *controlOptions, args []string) (string, error)) (*cobra.Command, *controlOptions) {
	var opts controlOptions
	envErr := envconfig.Process(context.Background(), &opts)
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args: func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError(err)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			if envErr != nil {
				return usageError(envErr)
			}
			if err := checkPositive(cmd, &opts); err != nil {
				return usageError(err)
			}
			if err := opts.Store.Validate(); err != nil {
				return usageError(err)
			}
			st, err := store.Open(cmd.Context(), opts.Store, g.logger)
			if err != nil {
				if errors.Is(err, store.ErrLocked) {
					err = fmt.Errorf("%w: serve holds the embedded store; start it with --nats-listen and give this command --nats-url", err)
				}
				return &exitError{code: exitInfra, err: err}
			}
			defer st.Close()
			msg, err := do(cmd.Context(), st, &opts, a)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, msg)
			return nil
		},
	}
	addStoreFlags(cmd.Flags(), &opts.Store)
	return cmd, &opts
}

// operator names the person giving a command: the user who ran sudo, else the user, and the host.
func operator() string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

func newPauseCommand(g *globalOptions) *cobra.Command {
	cmd, opts := newControlCommand(g, "pause", "Stop deploys from starting (deliveries still queue, validations still run)",
		`Pause automatic deploys: every serve instance sharing the state store leaves deploy jobs queued
(a running deploy finishes) until "cimdeploy resume". Deliveries are still accepted and pull requests
still validated.`, cobra.NoArgs,
		func(ctx context.Context, st *store.Store, opts *controlOptions, _ []string) (string, error) {
			if err := st.Pause(ctx, operator(), opts.reason); err != nil {
				return "", &exitError{code: exitInfra, err: err}
			}
			return "deploys paused; `cimdeploy resume` starts them again", nil
		})
	cmd.Flags().StringVar(&opts.reason, "reason", "", "why, for the others (kept in the pause state)")
	return cmd
}

func newResumeCommand(g *globalOptions) *cobra.Command {
	cmd, _ := newControlCommand(g, "resume", "Let deploys start again after a pause", "", cobra.NoArgs,
		func(ctx context.Context, st *store.Store, _ *controlOptions, _ []string) (string, error) {
			if err := st.Resume(ctx); err != nil {
				return "", &exitError{code: exitInfra, err: err}
			}
			return "deploys resumed", nil
		})
	return cmd
}

func newApproveCommand(g *globalOptions) *cobra.Command {
	cmd, _ := newControlCommand(g, "approve RUN", "Let a deploy run waiting for approval go on to the rollout",
		`Approve a deploy run that serve holds after build and publish (--require-approval). The run id is
in the run's page, its GitHub status and "cimdeploy runs". A run is decided once.`, cobra.ExactArgs(1),
		func(ctx context.Context, st *store.Store, _ *controlOptions, args []string) (string, error) {
			if err := st.Approve(ctx, args[0], operator()); err != nil {
				return "", &exitError{code: exitFailed, err: err}
			}
			return "run " + args[0] + " approved", nil
		})
	return cmd
}

func newRejectCommand(g *globalOptions) *cobra.Command {
	cmd, opts := newControlCommand(g, "reject RUN --reason WHY", "Stop a deploy run waiting for approval; it fails, naming who and why", "", cobra.ExactArgs(1),
		func(ctx context.Context, st *store.Store, opts *controlOptions, args []string) (string, error) {
			if opts.reason == "" {
				return "", usageError(errors.New("--reason is required: the run's status says why it was rejected"))
			}
			if err := st.Reject(ctx, args[0], operator(), opts.reason); err != nil {
				return "", &exitError{code: exitFailed, err: err}
			}
			return "run " + args[0] + " rejected", nil
		})
	cmd.Flags().StringVar(&opts.reason, "reason", "", "why (required)")
	return cmd
}
