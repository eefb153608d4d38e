package ca

import (
	"context"
	"log/slog"

	cflog "github.com/cloudflare/cfssl/log"
)

// cfssl logs through its own package-level logger, at INFO by default, to
// stderr: every issued certificate would print a line. Keep only its errors
// and send them through slog like the rest of Kurier.
func init() {
	cflog.Level = cflog.LevelError
	cflog.SetLogger(cfsslLogger{})
}

// logKeyComponent tags log lines that come from a library, not Kurier.
const logKeyComponent = "component"

// cfsslLogger forwards cfssl's log lines to slog.Default(), tagged so that
// an operator can tell them from Kurier's own.
type cfsslLogger struct{}

func (cfsslLogger) log(level slog.Level, msg string) {
	slog.Default().Log(context.Background(), level, msg, slog.String(logKeyComponent, "cfssl"))
}

func (l cfsslLogger) Debug(msg string)   { l.log(slog.LevelDebug, msg) }
func (l cfsslLogger) Info(msg string)    { l.log(slog.LevelInfo, msg) }
func (l cfsslLogger) Warning(msg string) { l.log(slog.LevelWarn, msg) }
func (l cfsslLogger) Err(msg string)     { l.log(slog.LevelError, msg) }
func (l cfsslLogger) Crit(msg string)    { l.log(slog.LevelError, msg) }
func (l cfsslLogger) Emerg(msg string)   { l.log(slog.LevelError, msg) }
