// Command cimdeploy turns commits of a CIM infrastructure repository into safe NixOS deployments.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/remote"
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
	// The first signal cancels the command, which stops its work and still records and cleans up; a
	// second one, once signals are no longer caught, ends the process at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
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
	if strings.HasPrefix(err.Error(), "unknown command ") { // cobra's own, for a command it does not have
		err = usageError(err)
	}
	fmt.Fprintf(stderr, "cimdeploy: %s\n", checkout.RedactURLs(err.Error()))
	return exitCode(ctx, err)
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
			g.logger = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}))
			return nil
		},
	}
	g.logLevel = "warn"
	if v := os.Getenv("CIMDEPLOY_LOG_LEVEL"); v != "" {
		g.logLevel = v
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", g.logLevel, "debug, info, warn or error [CIMDEPLOY_LOG_LEVEL]")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log debug messages (same as --log-level debug)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	root.AddCommand(
		newGenerateCommand(g),
		newGraphCommand(g),
		newRunCommand(g),
		newRunsCommand(g),
		newWatchCommand(g),
		newRolloutCommand(g),
		newRollbackCommand(g),
		newGenerationsCommand(g),
		newStatusCommand(g),
		newServeCommand(g),
		newPauseCommand(g),
		newResumeCommand(g),
		newApproveCommand(g),
		newRejectCommand(g),
		newLabCommand(g),
		newVersionCommand(g),
	)
	return root
}

// redactAttr keeps the credentials of URLs out of log lines, whatever attribute carries them.
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); strings.Contains(s, "@") {
			a.Value = slog.StringValue(checkout.RedactURLs(s))
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok && strings.Contains(err.Error(), "@") {
			a.Value = slog.StringValue(checkout.RedactURLs(err.Error()))
		}
	}
	return a
}

// exitError carries an explicit exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// noArgs is cobra.NoArgs with a usage error (exit 2).
func noArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return usageError(err)
	}
	return nil
}

// usageError marks err as a usage or configuration error (exit 2).
func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

// exitCode is the one place where errors become exit codes. An interrupted command (ctx, the
// command's context, is cancelled on SIGINT and SIGTERM) is 130 whatever broke on the way out; an
// error without an explicit code is 3 when its cause is the infrastructure (infrastructure), 1
// otherwise.
func exitCode(ctx context.Context, err error) int {
	var ee *exitError
	switch {
	case ctx.Err() != nil, errors.Is(err, context.Canceled):
		return exitCanceled
	case errors.As(err, &ee):
		return ee.code
	case infrastructure(err):
		return exitInfra
	default:
		return exitFailed
	}
}

// infrastructure reports whether err comes from something cimdeploy talks to rather than from the
// work: a network, DNS or SSH connection that fails or is refused, a repository that cannot be
// reached or refuses the credentials, a host key that does not match, nix that is not installed, the
// state store's connection.
func infrastructure(err error) bool {
	if err == nil {
		return false
	}
	var (
		opErr      *net.OpError
		dnsErr     *net.DNSError
		keyErr     *remote.HostKeyError
		nixErr     *nixrunner.Error
		gitErr     *githttp.Err
		unexpected *plumbing.UnexpectedError
	)
	switch {
	case errors.As(err, &opErr), errors.As(err, &dnsErr), errors.As(err, &keyErr):
		return true
	case errors.As(err, &gitErr), errors.As(err, &unexpected) && errors.As(unexpected.Err, &gitErr):
		// The git server broke (go-git's UnexpectedError does not unwrap).
		return gitErr.Response != nil && gitErr.Response.StatusCode >= 500
	case errors.As(err, &nixErr):
		return nixErr.Kind == nixrunner.KindNotFound
	}
	for _, target := range []error{
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ETIMEDOUT,
		remote.ErrAuth, remote.ErrConnectionLost, remote.ErrClosed,
		transport.ErrRepositoryNotFound, transport.ErrAuthenticationRequired, transport.ErrAuthorizationFailed,
		nats.ErrConnectionClosed, nats.ErrNoServers, nats.ErrTimeout, nats.ErrDisconnected, jetstream.ErrNoStreamResponse,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
