package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// watchOptions configure `cimdeploy watch`; the store settings are also CIMDEPLOY_* variables.
type watchOptions struct {
	Store store.Config
	JSON  bool
}

func newWatchCommand(g *globalOptions) *cobra.Command {
	var opts watchOptions
	envErr := envconfig.Process(context.Background(), &opts)
	cmd := &cobra.Command{
		Use:   "watch [RUN]",
		Short: "Follow a run's events live, from the state store",
		Long: `Follow one run as it happens, from its first event to its end, with the progress display of
` + "`cimdeploy run`" + `: live on a terminal, timestamped lines otherwise, JSON lines with --json. The events
come from the run history in the state store (stream CIMDEPLOY_RUNS), so any run can be watched, from
any process that reaches the store: a run of ` + "`cimdeploy serve`" + ` or of another terminal.

Without RUN it follows the newest run in progress, or waits for the next one to start. A run that has
already ended is replayed.

To watch the runs of serve: give watch serve's --data-dir (serve started with --nats-listen, which
serve --lab does, shares its embedded store with the commands on its directory), or the external
cluster's --nats-url both use.

Exit codes: 0 the run succeeded, 1 it failed or was cancelled (or RUN is unknown), 2 usage error,
3 the store cannot be reached, 130 interrupted.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.MaximumNArgs(1)(cmd, args); err != nil {
				return usageError(err)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if envErr != nil {
				return usageError(envErr)
			}
			runID := ""
			if len(args) == 1 {
				runID = args[0]
			}
			return runWatch(cmd.Context(), g, opts, runID)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print the run's events as JSON lines")
	addStoreFlags(cmd.Flags(), &opts.Store)
	return cmd
}

func runWatch(ctx context.Context, g *globalOptions, opts watchOptions, runID string) error {
	if err := opts.Store.Validate(); err != nil {
		return usageError(err)
	}
	if runID != "" {
		if _, err := store.RunSubject(runID, pipeline.RunFinished); err != nil {
			return usageError(fmt.Errorf("watch: %w", err))
		}
	}
	st, err := store.Open(ctx, opts.Store, g.logger)
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			err = fmt.Errorf("%w; serve shares its store with the commands on its --data-dir when started with --nats-listen", err)
		}
		return &exitError{code: exitInfra, err: err}
	}
	defer st.Close()

	if runID == "" {
		if runID, err = nextRun(ctx, g, st); err != nil {
			return err
		}
	} else if _, ok, err := st.Run(ctx, runID); err != nil {
		return &exitError{code: exitInfra, err: err}
	} else if !ok {
		return fmt.Errorf("watch: no run %s in the store (see `cimdeploy runs`)", runID)
	}

	mode := progressPlain
	switch {
	case opts.JSON:
		mode = progressJSON
	case isTerminal(g.stdout):
		mode = progressLive
	}
	prog := newProgress(g.stdout, mode)
	res, err := followRun(ctx, st.JetStream(), runID, prog)
	prog.Close()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &exitError{code: exitInfra, err: err}
	}
	if !opts.JSON {
		fmt.Fprintln(g.stdout)
		printSummary(g.stdout, res)
	}
	if res.Status == pipeline.StatusSuccess {
		return nil
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("run %s %s: %s", res.Run.ID, res.Status, firstLine(res.Error))}
}

// nextRun is the newest run in progress, or else the next run to start. The consumer that waits for
// the next start is made before the runs are listed, so a run starting in between is not missed.
func nextRun(ctx context.Context, g *globalOptions, st *store.Store) (string, error) {
	cons, err := st.JetStream().OrderedConsumer(ctx, store.StreamRuns, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{store.SubjectRuns + ".*." + pipeline.RunStarted},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return "", &exitError{code: exitInfra, err: fmt.Errorf("watch: wait for runs: %w", err)}
	}
	runs, err := st.Runs(ctx, 0)
	if err != nil {
		return "", &exitError{code: exitInfra, err: err}
	}
	for _, r := range runs { // newest first
		if !r.Status.Final() {
			return r.ID, nil
		}
	}
	fmt.Fprintln(g.stderr, "no run in progress; waiting for the next one to start")
	it, err := cons.Messages()
	if err != nil {
		return "", &exitError{code: exitInfra, err: fmt.Errorf("watch: wait for runs: %w", err)}
	}
	defer it.Stop()
	msg, err := it.Next(jetstream.NextContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", &exitError{code: exitInfra, err: fmt.Errorf("watch: wait for runs: %w", err)}
	}
	// cimdeploy.runs.<run-id>.RunStarted
	id := strings.TrimSuffix(strings.TrimPrefix(msg.Subject(), store.SubjectRuns+"."), "."+pipeline.RunStarted)
	if _, err := store.RunSubject(id, pipeline.RunStarted); err != nil {
		return "", fmt.Errorf("watch: subject %q: %w", msg.Subject(), err)
	}
	return id, nil
}

// followRun hands r every event of the run, from its first on, as the stream has them and as they
// come, until RunFinished, and returns the run's result from it.
func followRun(ctx context.Context, js jetstream.JetStream, runID string, r pipeline.Reporter) (*pipeline.Result, error) {
	cons, err := js.OrderedConsumer(ctx, store.StreamRuns, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{store.SubjectRuns + "." + runID + ".>"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("watch run %s: %w", runID, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("watch run %s: %w", runID, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("watch run %s: %w", runID, err)
		}
		var ev pipeline.Event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			return nil, fmt.Errorf("watch run %s: decode %s: %w", runID, msg.Subject(), err)
		}
		if err := r.Report(ctx, ev); err != nil {
			return nil, fmt.Errorf("watch run %s: show %s: %w", runID, ev.Type, err)
		}
		if ev.Type != pipeline.RunFinished {
			continue
		}
		var res pipeline.Result
		if err := json.Unmarshal(ev.Data, &res); err != nil {
			return nil, fmt.Errorf("watch run %s: decode %s: %w", runID, ev.Type, err)
		}
		return &res, nil
	}
}
