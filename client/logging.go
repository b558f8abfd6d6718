package client

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// SetRedisLogger routes the log lines of go-redis, which this package
// speaks RESP through, to l at level Warn (message "go-redis", the line in
// key "line"); a nil l discards them.
//
// By default go-redis prints some failures to the process's stderr, such
// as "redis: connection pool: failed to dial after 5 attempts" for every
// call while the server is down. Each of them is also returned to the
// caller as the call's error, so they add nothing to a program that
// reports its errors; kvctl discards them.
//
// go-redis v9 has one logger for the whole process, not one per client.
// Changing it affects every go-redis client in the program, including ones
// that have nothing to do with kvd, so Dial leaves it alone, as a library
// should not change process-wide state behind its caller's back: call
// SetRedisLogger from main if you want these lines elsewhere or gone. A
// later redis.SetLogger call replaces it.
func SetRedisLogger(l *slog.Logger) {
	redis.SetLogger(redisLogger{l})
}

// redisLogger adapts a *slog.Logger to go-redis's Printf logger.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if r.l == nil || !r.l.Enabled(ctx, slog.LevelWarn) {
		return
	}
	r.l.WarnContext(ctx, "go-redis", "line", strings.TrimSpace(fmt.Sprintf(format, v...)))
}
