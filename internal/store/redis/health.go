package redis

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outbound-dev/outbound/internal/store"
)

// healthState is the store's health, with a log line per transition.
type healthState struct {
	log *slog.Logger
	mu  sync.Mutex
	h   store.Health
}

func (hs *healthState) init(addr string, log *slog.Logger) {
	hs.log = log
	hs.h = store.Health{Backend: "redis", Addr: addr, Up: true, Since: time.Now()}
}

func (hs *healthState) down(err error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.h.Err = err.Error()
	if hs.h.Up {
		hs.h.Up, hs.h.Since = false, time.Now()
		hs.log.Warn("store: Redis unavailable; requests are decided on the last known state and control writes answer 503", "error", hs.h.Err)
	}
}

func (hs *healthState) up() {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if !hs.h.Up {
		hs.log.Info("store: Redis reachable again", "down_for", time.Since(hs.h.Since).Round(time.Millisecond).String())
		hs.h.Up, hs.h.Since, hs.h.Err = true, time.Now(), ""
	}
}

func (hs *healthState) resynced(again bool) {
	if again {
		hs.mu.Lock()
		hs.h.Resyncs++
		hs.mu.Unlock()
	}
	hs.up()
}

// claimLost sets ClaimLost and reports whether it changed.
func (hs *healthState) claimLost(lost bool) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	changed := hs.h.ClaimLost != lost
	hs.h.ClaimLost = lost
	return changed
}

func (hs *healthState) get() store.Health {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.h
}

// go-redis logs through one global logger; the first store's wins, at
// debug level, since every failure it notes reaches us as an error too.
var loggerOnce sync.Once

type goredisLogger struct{ l *slog.Logger }

func (g goredisLogger) Printf(_ context.Context, format string, v ...any) {
	g.l.Debug("go-redis: " + fmt.Sprintf(format, v...))
}

func setLogger(l *slog.Logger) {
	loggerOnce.Do(func() { goredis.SetLogger(goredisLogger{l}) })
}
