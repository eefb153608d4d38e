package postgres_test

import (
	"context"
	"log/slog"
	"testing"

	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/broker/store/storetest"
)

// The PostgreSQL store is a node.Store.
var _ node.Store = (*postgres.Store)(nil)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open opens a store on dsn that is closed when t ends.
func open(t testing.TB, dsn string, opts ...postgres.Option) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), dsn, append([]postgres.Option{postgres.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

// TestConformance runs the backend-neutral suite of node.Store against
// stores in fresh databases.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) node.Store { return open(t, pgtest.DSN(t)) })
}
