package redis

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/internal/store/redis/redistest"
	"github.com/outbound-dev/outbound/internal/store/storetest"
)

var prefixes atomic.Int64

// openAt opens a store on srv under prefix, closed by the test's cleanup.
func openAt(t *testing.T, url, prefix string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{URL: url, Prefix: prefix, Logger: slog.New(slog.DiscardHandler), SweepEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	storetest.Run(t, storetest.Backend{
		Fresh: func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
			prefix := fmt.Sprintf("t%d:", prefixes.Add(1))
			s := openAt(t, srv.URL(), prefix)
			return s, func(t *testing.T) store.Store {
				s.Close()
				return openAt(t, srv.URL(), prefix)
			}
		},
		Second: func(t *testing.T, s store.Store) store.Store {
			return openAt(t, srv.URL(), s.(*Store).keys.p)
		},
	})
}
