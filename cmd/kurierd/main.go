// Command kurierd runs a Kurier node.
//
//	kurierd -dev [-data DIR] [-listen ADDR]   the embedded development setup
//	        [-store postgres://…]              on PostgreSQL: several processes, one -data, one database
//	kurierd -config FILE                      a production node
//	kurierd -check-store -config FILE         check a stopped node's store (or with -dev -data DIR)
//	kurierd backup -config FILE -o BACKUP     back up the node's store, running or stopped
//	kurierd restore -config FILE -i BACKUP    restore a backup into the node's empty data directory
//	        [-accept-rollback]                 even if it is behind the kept KURIER-LOGMARK (forks the log)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"kurier.dev/kurier/broker/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kurierd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "backup":
			return backup(ctx, args[1:], stdout, stderr)
		case "restore":
			return restore(ctx, args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("kurierd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.Bool("dev", false, "run the embedded development setup (CA, node, an agency and a court) in -data")
	data := fs.String("data", "./kurier-dev", "with -dev: the development directory")
	listen := fs.String("listen", daemon.DevListen, "with -dev: the address to listen on")
	storeDSN := fs.String("store", "", "with -dev: a PostgreSQL DSN (postgres://…) to keep the store in instead of -data; several kurierd -dev with different -listen may then share one -data and database")
	configPath := fs.String("config", "", "the node's YAML config file")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	checkStore := fs.Bool("check-store", false, "check the stopped node's store for damage, print what is damaged, and exit non-zero if anything is")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	logger, err := newLogger(*logLevel, stderr)
	if err != nil {
		return err
	}

	devOnly := map[string]bool{}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "data" || f.Name == "listen" || f.Name == "store" {
			devOnly[f.Name] = true
		}
	})
	var cfg *daemon.Config
	switch {
	case *dev && *configPath != "":
		return errors.New("-dev and -config exclude each other")
	case !*dev && len(devOnly) > 0:
		return errors.New("-data, -listen and -store go with -dev; a config file names its own data, listen and store")
	case *dev:
		cfg, err = daemon.DevStore(*data, *listen, daemon.StoreConfig{Postgres: *storeDSN})
	case *configPath != "":
		cfg, err = daemon.LoadConfig(*configPath)
	default:
		fs.Usage()
		return errors.New("give -dev or -config FILE")
	}
	if err != nil {
		return err
	}
	if *checkStore {
		return daemon.CheckStore(ctx, cfg, stdout, logger)
	}
	var ready func(net.Addr)
	if *dev {
		ready = func(addr net.Addr) { printDevHint(stdout, *data, addr.String()) }
	}
	return daemon.Run(ctx, cfg, logger, ready)
}

func newLogger(level string, stderr io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l}))
	slog.SetDefault(logger)
	return logger, nil
}

// backup is kurierd backup.
func backup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kurierd backup", flag.ContinueOnError)
	out := fs.String("o", "", "the file to write the backup to (must not exist)")
	cfg, logger, err := subcommand(fs, args, stderr, func() error {
		if *out == "" {
			return errors.New("kurierd backup: give -o BACKUP, the file to write")
		}
		return nil
	})
	if err != nil {
		return err
	}
	return daemon.Backup(ctx, cfg, *out, stdout, logger)
}

// restore is kurierd restore.
func restore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kurierd restore", flag.ContinueOnError)
	in := fs.String("i", "", "the backup file to restore")
	accept := fs.Bool("accept-rollback", false, "restore even if the backup's log is behind the KURIER-LOGMARK kept in the data directory, or forks from it: checkpoints signed after the backup will show a fork")
	cfg, logger, err := subcommand(fs, args, stderr, func() error {
		if *in == "" {
			return errors.New("kurierd restore: give -i BACKUP, the backup to restore")
		}
		return nil
	})
	if err != nil {
		return err
	}
	return daemon.Restore(ctx, cfg, *in, *accept, stdout, logger)
}

// subcommand parses the flags a subcommand shares (-config, -log-level)
// and its own, which check checks, and loads the config.
func subcommand(fs *flag.FlagSet, args []string, stderr io.Writer, check func() error) (*daemon.Config, *slog.Logger, error) {
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "the node's YAML config file")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	if *configPath == "" {
		return nil, nil, fmt.Errorf("%s: give -config FILE", fs.Name())
	}
	if err := check(); err != nil {
		return nil, nil, err
	}
	logger, err := newLogger(*logLevel, stderr)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := daemon.LoadConfig(*configPath)
	if err != nil {
		return nil, nil, err
	}
	return cfg, logger, nil
}

func printDevHint(w io.Writer, dir, addr string) {
	fmt.Fprintf(w, `Kurier development node listening on %[2]s
  agency: %[3]s  (identity %[1]s/identities/agency)
  court:  %[4]s  (identity %[1]s/identities/court)

Send a first message, in another terminal:
  echo "Hallo Gericht" > brief.txt
  go run ./cmd/kurier send --id %[1]s/identities/agency --node %[2]s --to %[4]s --subject "Erster Schriftsatz" brief.txt
  go run ./cmd/kurier inbox --id %[1]s/identities/court --node %[2]s
`, dir, addr, daemon.DevAgency, daemon.DevCourt)
}
