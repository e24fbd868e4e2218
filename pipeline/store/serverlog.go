package store

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// serverLog routes the embedded nats-server's log to slog: its notices, debug and trace lines at
// debug level (they are the server's business, not the user's), warnings and errors as they are. A
// fatal error is logged and handed to fatal, never exits the process: Open returns it.
//
// Some of the server's goroutines (a stream's internal loop closing its client) still log after
// Shutdown and WaitForShutdown return; once the store is closed its logger's writer belongs to the
// caller again, so mute silences the log for good and waits for a line being written.
type serverLog struct {
	logger *slog.Logger
	fatal  func(msg string)
	muted  *logMute
}

// logMute turns a serverLog off.
type logMute struct {
	mu  sync.RWMutex
	off bool
}

// mute returns once no line is being written and none will be.
func (m *logMute) mute() {
	m.mu.Lock()
	m.off = true
	m.mu.Unlock()
}

func (l serverLog) log(level slog.Level, format string, v []any) {
	l.muted.mu.RLock()
	defer l.muted.mu.RUnlock()
	if !l.muted.off && l.logger.Enabled(context.Background(), level) {
		l.logger.Log(context.Background(), level, fmt.Sprintf(format, v...), "component", "nats-server")
	}
}

func (l serverLog) Noticef(format string, v ...any) { l.log(slog.LevelDebug, format, v) }
func (l serverLog) Debugf(format string, v ...any)  { l.log(slog.LevelDebug, format, v) }
func (l serverLog) Tracef(format string, v ...any)  { l.log(slog.LevelDebug, format, v) }
func (l serverLog) Warnf(format string, v ...any)   { l.log(slog.LevelWarn, format, v) }
func (l serverLog) Errorf(format string, v ...any)  { l.log(slog.LevelError, format, v) }
func (l serverLog) Fatalf(format string, v ...any) {
	l.log(slog.LevelError, format, v)
	l.fatal(fmt.Sprintf(format, v...))
}
