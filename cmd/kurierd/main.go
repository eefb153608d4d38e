// Command kurierd runs a Kurier node.
//
//	kurierd -dev [-data DIR] [-listen ADDR]   the embedded development setup
//	kurierd -config FILE                      a production node
//	kurierd -check-store -config FILE         check a stopped node's store (or with -dev -data DIR)
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
	fs := flag.NewFlagSet("kurierd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.Bool("dev", false, "run the embedded development setup (CA, node, an agency and a court) in -data")
	data := fs.String("data", "./kurier-dev", "with -dev: the development directory")
	listen := fs.String("listen", daemon.DevListen, "with -dev: the address to listen on")
	configPath := fs.String("config", "", "the node's YAML config file")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	checkStore := fs.Bool("check-store", false, "check the stopped node's store for damage, print what is damaged, and exit non-zero if anything is")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	devOnly := map[string]bool{}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "data" || f.Name == "listen" {
			devOnly[f.Name] = true
		}
	})
	var cfg *daemon.Config
	var err error
	switch {
	case *dev && *configPath != "":
		return errors.New("-dev and -config exclude each other")
	case !*dev && len(devOnly) > 0:
		return errors.New("-data and -listen go with -dev; a config file names its own data and listen")
	case *dev:
		cfg, err = daemon.Dev(*data, *listen)
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
