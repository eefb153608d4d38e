package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRun_Flags(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"nothing":                {nil, "give -dev or -config FILE"},
		"both":                   {[]string{"-dev", "-config", "x.yaml"}, "exclude each other"},
		"data without dev":       {[]string{"-config", "x.yaml", "-data", "d"}, "go with -dev"},
		"listen without dev":     {[]string{"-listen", "127.0.0.1:1"}, "go with -dev"},
		"store without dev":      {[]string{"-config", "x.yaml", "-store", "postgres://kurier@127.0.0.1/kurier"}, "go with -dev"},
		"missing config file":    {[]string{"-config", "/nonexistent/kurierd.yaml"}, "read config"},
		"stray argument":         {[]string{"-dev", "extra"}, "unexpected arguments"},
		"bad log level":          {[]string{"-dev", "-log-level", "loud"}, "-log-level"},
		"backup without -o":      {[]string{"backup", "-config", "x.yaml"}, "give -o BACKUP"},
		"backup without config":  {[]string{"backup", "-o", "b.kbak"}, "give -config FILE"},
		"backup stray argument":  {[]string{"backup", "-config", "x.yaml", "-o", "b", "extra"}, "unexpected arguments"},
		"restore without -i":     {[]string{"restore", "-config", "x.yaml"}, "give -i BACKUP"},
		"restore missing config": {[]string{"restore", "-config", "/nonexistent/kurierd.yaml", "-i", "b"}, "read config"},
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q) = %v, want an error with %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestRun_CheckStorePostgres: -check-store of a development node on
// PostgreSQL says that it reads badger stores, and what checks
// PostgreSQL instead.
func TestRun_CheckStorePostgres(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-dev", "-data", t.TempDir(), "-store", "postgres://kurier@127.0.0.1:1/kurier", "-check-store"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "pg_amcheck") {
		t.Fatalf("-check-store on PostgreSQL = %v, want an error naming pg_amcheck", err)
	}
}
