package store

import (
	"context"
	"fmt"
	"log/slog"
)

// serverLog routes the embedded nats-server's log to slog: its notices, debug and trace lines at
// debug level (they are the server's business, not the user's), warnings and errors as they are. A
// fatal error is logged and handed to fatal, never exits the process: Open returns it.
type serverLog struct {
	logger *slog.Logger
	fatal  func(msg string)
}

func (l serverLog) log(level slog.Level, format string, v []any) {
	if l.logger.Enabled(context.Background(), level) {
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
