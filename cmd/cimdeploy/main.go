// Command cimdeploy turns commits of a CIM infrastructure repository into safe NixOS deployments.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes, documented in the README.
const (
	exitOK       = 0
	exitFailed   = 1 // the work ran and failed (a pipeline, a drift check, a validation)
	exitUsage    = 2 // usage or configuration error
	exitInfra    = 3 // infrastructure error: a tool, a host or the state store broke
	exitCanceled = 130
)

// globalOptions are shared by every command.
type globalOptions struct {
	stdin          io.Reader // prompts read it; only a terminal is asked
	stdout, stderr io.Writer
	logger         *slog.Logger
	logLevel       string
	verbose        bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globalOptions{stdin: os.Stdin, stdout: stdout, stderr: stderr}
	root := newRootCommand(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "cimdeploy: %v\n", err)
	return exitCode(err)
}

func newRootCommand(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:           "cimdeploy",
		Short:         "Deploy NixOS fleets projected from CIM domain events",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
				return usageError(fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel))
			}
			if g.verbose {
				level = slog.LevelDebug
			}
			g.logger = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
			return nil
		},
	}
	g.logLevel = "warn"
	if v := os.Getenv("CIMDEPLOY_LOG_LEVEL"); v != "" {
		g.logLevel = v
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", g.logLevel, "debug, info, warn or error [CIMDEPLOY_LOG_LEVEL]")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log debug messages (same as --log-level debug)")
	root.AddCommand(
		newGenerateCommand(g),
		newRunCommand(g),
		newRunsCommand(g),
		newRolloutCommand(g),
		newRollbackCommand(g),
		newGenerationsCommand(g),
		newLabCommand(g),
		newVersionCommand(g),
	)
	return root
}

// exitError carries an explicit exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks err as a usage or configuration error (exit 2).
func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

// exitCode is the one place where errors become exit codes.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, context.Canceled):
		return exitCanceled
	default:
		return exitFailed
	}
}
