package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"

	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

type runsOptions struct {
	Store store.Config
	Limit int
	JSON  bool
}

func newRunsCommand(g *globalOptions) *cobra.Command {
	var opts runsOptions
	envErr := envconfig.Process(context.Background(), &opts)
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "List past runs from the history, newest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if envErr != nil {
				return usageError(envErr)
			}
			if err := checkPositive(cmd, &opts); err != nil {
				return usageError(err)
			}
			return runRuns(cmd.Context(), g, opts)
		},
	}
	cmd.Flags().IntVarP(&opts.Limit, "limit", "n", 20, "show at most this many runs (0: all)")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print the runs as JSON")
	addStoreFlags(cmd.Flags(), &opts.Store)
	return cmd
}

func runRuns(ctx context.Context, g *globalOptions, opts runsOptions) error {
	if err := opts.Store.Validate(); err != nil {
		return usageError(err)
	}
	st, err := store.Open(ctx, opts.Store, g.logger)
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	defer st.Close()
	runs, err := st.Runs(ctx, opts.Limit)
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	if opts.JSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(runs)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tSTATUS\tKIND\tREF\tCOMMIT\tSTARTED\tDURATION\tSTAGE\tERROR")
	for _, r := range runs {
		started := r.Created
		if !r.Start.IsZero() {
			started = r.Start
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Status, r.Kind, head(r.Ref, 40), short(r.Commit),
			started.Local().Format("2006-01-02 15:04:05"), r.Duration.Round(time.Millisecond), r.Stage, head(firstLine(r.Error), 80))
	}
	return tw.Flush()
}

// head is the start of s, at most n bytes (at a character boundary), with "…" when cut.
func head(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
