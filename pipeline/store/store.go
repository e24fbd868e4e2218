package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Store keeps the run history, the run summaries, the deployed state of the nodes and the flake
// check cache in NATS JetStream: in an embedded nats-server under Config.DataDir, or in an external
// cluster at Config.URL. A Store is safe for concurrent use. Close it when done; every method fails
// after Close.
type Store struct {
	cfg    Config
	logger *slog.Logger

	srv    *server.Server // the embedded server; nil with an external URL
	srvLog *logMute       // silences srv's log once the store is closed
	lock   *dirLock       // held on DataDir while srv runs; nil with an external URL

	nc     *nats.Conn
	closed chan struct{} // closed by nats once nc is closed for good
	js     jetstream.JetStream
	runs   jetstream.Stream
	runKV  jetstream.KeyValue
	nodes  jetstream.KeyValue
	checks jetstream.KeyValue
	leases jetstream.KeyValue

	// owner identifies this process in the leases it holds (for people reading the bucket).
	owner     []byte
	leaseMu   sync.Mutex
	held      map[string]struct{} // runs whose lease this Store renews
	stopRenew chan struct{}       // closed to stop renewLeases; nil while it does not run
	renewDone chan struct{}

	// token is what clients of the embedded server authenticate with.
	token string

	// interrupted are the runs Open marked interrupted (Interrupted).
	interrupted []RunSummary

	closeOnce func() error
}

// Open starts the embedded server (or connects to cfg.URL), then creates or updates the stream and
// the buckets, so opening is idempotent and also migrates their settings (MaxAge, Replicas).
//
// The embedded server keeps its files in <DataDir>/nats, handles no signals, opens no TCP port
// unless cfg.Listen asks for one, and logs through logger (nil discards). It locks DataDir first: a
// second Open of the same DataDir, from this process or another, fails with ErrLocked and a message
// naming the holder's pid, before it touches any file of the first.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("store config: %w", err)
	}
	s := &Store{cfg: cfg, logger: logger, closed: make(chan struct{}), held: map[string]struct{}{}, owner: leaseOwner()}
	s.closeOnce = sync.OnceValue(s.shutdown)
	if err := s.open(ctx); err != nil {
		s.shutdown()
		return nil, err
	}
	// Runs left running by a process that is gone are failed now, so no run stays running forever.
	// A failure here leaves them for the next Open and does not keep the store from working.
	marked, err := s.MarkInterrupted(ctx)
	s.interrupted = marked
	if err != nil {
		if ctx.Err() != nil {
			s.shutdown()
			return nil, fmt.Errorf("mark interrupted runs: %w", err)
		}
		logger.Warn("mark interrupted runs", "err", err)
	}
	return s, nil
}

// leaseOwner is "host pid <n>", what a lease says about the process holding it.
func leaseOwner() []byte {
	host, _ := os.Hostname()
	return fmt.Appendf(nil, "%s pid %d", host, os.Getpid())
}

func (s *Store) open(ctx context.Context) error {
	opts := []nats.Option{
		nats.Name("cimdeploy"),
		nats.Timeout(s.cfg.Timeout),
		nats.DrainTimeout(s.cfg.Timeout),
		nats.ClosedHandler(func(*nats.Conn) { close(s.closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.logger.Warn("nats", "err", err)
		}),
	}
	url := s.cfg.URL
	if url == "" {
		err := s.startServer()
		shared, token, ok := "", "", false
		if errors.Is(err, ErrLocked) {
			shared, token, ok = advertised(filepath.Join(s.absDataDir(), "lock"))
		}
		switch {
		case ok:
			// Another cimdeploy (serve) holds the data directory and lets its clients in: share its store.
			s.logger.Info("the data directory's store is served by another cimdeploy: using it", "data_dir", s.cfg.DataDir)
			s.srv, s.lock = nil, nil
			url = shared
			opts = append(opts, nats.Token(token), nats.NoReconnect())
		case err != nil:
			return err
		default:
			opts = append(opts, nats.InProcessServer(s.srv), nats.NoReconnect(), nats.Token(s.token))
		}
	} else {
		auth, err := externalAuth(s.cfg)
		if err != nil {
			return err
		}
		opts = append(opts, auth...)
		opts = append(opts,
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil { // nil: closed on purpose
					s.logger.Warn("nats disconnected", "err", err)
				}
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				s.logger.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
			}),
		)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		if url == "" {
			return fmt.Errorf("connect to the embedded nats-server: %w", err)
		}
		return fmt.Errorf("connect to nats at %s: %w", redact(url), err)
	}
	s.nc = nc
	if s.js, err = jetstream.New(nc, jetstream.WithDefaultTimeout(s.cfg.Timeout)); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return s.provision(ctx)
}

// externalAuth are the client options of an external cluster: its user (creds or nkey seed) and, with
// a CA, TLS verified against it. Each file is checked first; no error quotes a file's contents.
func externalAuth(cfg Config) ([]nats.Option, error) {
	var opts []nats.Option
	for _, f := range []struct{ what, path string }{{"nats credentials", cfg.CredsFile}, {"nats nkey seed", cfg.NkeyFile}, {"nats CA", cfg.CAFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", f.what, err)
		}
	}
	switch {
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	case cfg.NkeyFile != "":
		opt, err := nats.NkeyOptionFromSeed(cfg.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed %s: %w", cfg.NkeyFile, err)
		}
		opts = append(opts, opt)
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	return opts, nil
}

// startServer locks DataDir and starts the embedded server in it.
func (s *Store) startServer() error {
	dir, err := filepath.Abs(s.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if s.lock, err = lockDir(dir); err != nil {
		return err
	}
	// Every client needs a token, in-process ones too: with a listener, it keeps out whoever cannot
	// read the lock file (the data directory is 0700).
	var tok [24]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return fmt.Errorf("embedded nats-server token: %w", err)
	}
	s.token = hex.EncodeToString(tok[:])
	opts := &server.Options{
		ServerName:    "cimdeploy",
		JetStream:     true,
		StoreDir:      filepath.Join(dir, "nats"),
		NoSigs:        true,
		DontListen:    s.cfg.Listen == "",
		Authorization: s.token,
	}
	if s.cfg.Listen != "" {
		opts.Host, opts.Port, _ = splitListen(s.cfg.Listen) // validated by Open
		if ip := net.ParseIP(opts.Host); ip == nil || !ip.IsLoopback() {
			s.logger.Warn("the embedded nats-server listens beyond loopback without authentication", "listen", s.cfg.Listen)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("embedded nats-server: %w", err)
	}
	var (
		mu    sync.Mutex
		fatal error
	)
	s.srvLog = &logMute{}
	srv.SetLoggerV2(serverLog{logger: s.logger, muted: s.srvLog, fatal: func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		if fatal == nil {
			fatal = errors.New(msg)
		}
	}}, s.logger.Enabled(context.Background(), slog.LevelDebug), false, false)
	s.srv = srv
	srv.Start() // returns once started; the server runs its own goroutines until Shutdown
	mu.Lock()
	err = fatal
	mu.Unlock()
	if err != nil {
		return fmt.Errorf("embedded nats-server in %s: %w", dir, err)
	}
	if !srv.ReadyForConnections(s.cfg.Timeout) {
		return fmt.Errorf("embedded nats-server in %s: not ready after %v", dir, s.cfg.Timeout)
	}
	if !srv.JetStreamEnabled() {
		return fmt.Errorf("embedded nats-server in %s: JetStream did not start", dir)
	}
	if s.cfg.Listen != "" {
		if err := s.lock.advertise(srv.ClientURL(), s.token); err != nil {
			return fmt.Errorf("lock file: %w", err)
		}
	}
	return nil
}

// absDataDir is DataDir made absolute (DataDir itself when that fails).
func (s *Store) absDataDir() string {
	if dir, err := filepath.Abs(s.cfg.DataDir); err == nil {
		return dir
	}
	return s.cfg.DataDir
}

// provision creates or updates the stream and the buckets.
func (s *Store) provision(ctx context.Context) error {
	var err error
	s.runs, err = s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamRuns,
		Description: "cimdeploy run events, one subject per run and event type",
		Subjects:    []string{SubjectRuns + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      s.cfg.MaxAge,
		Duplicates:  min(dupWindow, s.cfg.MaxAge),
		Replicas:    s.cfg.Replicas,
		DenyDelete:  true,
		AllowDirect: true,
	})
	if err != nil {
		return fmt.Errorf("stream %s: %w", StreamRuns, err)
	}
	buckets := []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&s.runKV, jetstream.KeyValueConfig{Bucket: BucketRuns, Description: "cimdeploy: latest summary per run id",
			History: 1, TTL: s.cfg.MaxAge}},
		{&s.nodes, jetstream.KeyValueConfig{Bucket: BucketNodes, Description: "cimdeploy: deployed state per node",
			History: nodeHistory}},
		{&s.checks, jetstream.KeyValueConfig{Bucket: BucketChecks, Description: "cimdeploy: flake check verdicts",
			History: 1, TTL: s.cfg.MaxAge}},
		{&s.leases, jetstream.KeyValueConfig{Bucket: BucketLeases, Description: "cimdeploy: runs in progress, renewed by their process",
			History: 1, TTL: s.cfg.lease()}},
	}
	for _, b := range buckets {
		b.cfg.Storage = jetstream.FileStorage
		b.cfg.Replicas = s.cfg.Replicas
		if *b.kv, err = s.js.CreateOrUpdateKeyValue(ctx, b.cfg); err != nil {
			return fmt.Errorf("bucket %s: %w", b.cfg.Bucket, err)
		}
	}
	return nil
}

const (
	// dupWindow is how long a retried Report of the same event_id is recognised and dropped.
	dupWindow = 10 * time.Minute
	// nodeHistory is how many past states per node the nodes bucket keeps (nats kv history).
	nodeHistory = 10
)

// Close drains the connection (pending publishes are flushed), shuts the embedded server down and
// waits for it, then releases the DataDir lock. It is safe to call more than once and from several
// goroutines; every call returns the first call's result.
func (s *Store) Close() error { return s.closeOnce() }

func (s *Store) shutdown() error {
	var errs []error
	if s.leases != nil {
		s.stopLeases()
	}
	if s.nc != nil {
		if err := s.nc.Drain(); err != nil {
			s.nc.Close()
		}
		timer := time.NewTimer(2 * s.cfg.Timeout)
		select {
		case <-s.closed:
		case <-timer.C:
			s.nc.Close()
			errs = append(errs, fmt.Errorf("drain nats connection: no close after %v", 2*s.cfg.Timeout))
		}
		timer.Stop()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srvLog.mute()
	}
	if s.lock != nil {
		if err := s.lock.unlock(); err != nil {
			errs = append(errs, fmt.Errorf("unlock data dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// redact drops the user info (user, password or token) from a comma-separated list of NATS URLs,
// for messages.
func redact(urls string) string {
	list := strings.Split(urls, ",")
	for i, u := range list {
		if parsed, err := neturl.Parse(strings.TrimSpace(u)); err == nil {
			parsed.User = nil
			list[i] = parsed.String()
		} else {
			list[i] = "(unparsable URL)"
		}
	}
	return strings.Join(list, ",")
}
