package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/admin"
	"kurier.dev/kurier/broker/store"
)

// Backup writes a consistent backup of the node's store to the file out,
// as kurierd backup does. If the node is running (its store's directory
// lock is held), the backup comes through the node's admin socket while
// it keeps serving; if not, Backup opens the store itself. The file is
// written beside out under a temporary name, synced, and only then given
// its name, so out is either a whole backup or not there; an existing out
// is not replaced. It prints what the backup holds to stdout.
func Backup(ctx context.Context, cfg *Config, out string, stdout io.Writer, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := requireBadger(cfg, "kurierd backup", "back the database up with pg_dump, or with PostgreSQL's continuous backup (pg_basebackup and WAL archiving)"); err != nil {
		return err
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("backup %s exists already; give another name, or remove it first", out)
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.partial")
	if err != nil {
		return fmt.Errorf("create the backup: %w", err)
	}
	defer os.Remove(f.Name()) // after the link below, only the temporary name
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	info, how, err := backupTo(ctx, cfg, w, logger)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		return fmt.Errorf("back up %s: %w", cfg.Data, err)
	}
	// link, not rename: it refuses to replace a file made meanwhile.
	if err := os.Link(f.Name(), out); err != nil {
		return fmt.Errorf("name the backup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync()
		d.Close()
	}
	fmt.Fprintf(stdout, "backed up %s %s to %s: the log of %d leaves (root %x) as of %s, %d keys, %d payload files of %d bytes\n",
		cfg.Data, how, out, info.LogSize, info.LogRoot, info.Created.Format(time.RFC3339), info.Keys, info.PayloadFiles, info.PayloadBytes)
	return nil
}

// backupTo writes the backup to w, through the running node or from the
// store opened here, and says which.
func backupTo(ctx context.Context, cfg *Config, w io.Writer, logger *slog.Logger) (store.BackupInfo, string, error) {
	inUse, err := store.InUse(cfg.Data)
	if err != nil {
		return store.BackupInfo{}, "", err
	}
	if inUse {
		info, err := admin.Backup(ctx, cfg.Data, w)
		if errors.Is(err, admin.ErrNotRunning) {
			err = fmt.Errorf("the store is in use, but %w: is it a node of a version without the admin socket, or another program? Stop it and back up again", err)
		}
		return info, "through the running node", err
	}
	if ok, err := store.Exists(cfg.Data); err != nil {
		return store.BackupInfo{}, "", err
	} else if !ok {
		return store.BackupInfo{}, "", fmt.Errorf("no store in %s to back up (is data in the config right?)", cfg.Data)
	}
	if err := checkOwner(cfg.Data, "backup"); err != nil {
		return store.BackupInfo{}, "", err
	}
	db, err := store.Open(cfg.Data, store.Options{Logger: logger})
	if err != nil {
		return store.BackupInfo{}, "", fmt.Errorf("open the stopped node's store (if the node started meanwhile, back up again): %w", err)
	}
	info, err := db.Backup(ctx, w)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	// The node records what it serves; a backup of a stopped node is
	// recorded here.
	audit := openAuditFor(cfg, logger)
	defer audit.Close()
	auditBackup(audit, "of the stopped node", info, err)
	return info, "(the node is stopped)", err
}

// Restore restores the backup in the file in into the node's data
// directory, as kurierd restore does: see store.Restore. The directory
// must be empty, or hold only the high-water mark (store.MarkFile) of the
// node being replaced, kept there so that the restore can tell whether the
// backup is behind the log's checkpoints; such a backup is refused unless
// acceptRollback. The restored store is checked as kurierd -check-store
// checks it, signatures and chains included. It prints what it restored,
// and every damage found, to stdout, and warns (at WARN) of an accepted
// rollback and of a restore without a mark.
func Restore(ctx context.Context, cfg *Config, in string, acceptRollback bool, stdout io.Writer, logger *slog.Logger) error {
	logger, files, err := prepare(cfg, logger)
	if err != nil {
		return err
	}
	if err := requireBadger(cfg, "kurierd restore", "restore the database with pg_restore or PostgreSQL's point-in-time recovery; kurierd refuses at start a log behind its high-water mark"); err != nil {
		return err
	}
	if err := checkOwner(cfg.Data, "restore"); err != nil {
		return err
	}
	intact, err := intactTrust(files)
	if err != nil {
		return err
	}
	f, err := os.Open(in)
	if err != nil {
		return fmt.Errorf("open the backup: %w", err)
	}
	defer f.Close()
	res, err := store.Restore(ctx, cfg.Data, bufio.NewReaderSize(f, 1<<20), store.RestoreOptions{
		Store:          store.Options{Logger: logger},
		AcceptRollback: acceptRollback,
		Message: func(_ context.Context, _ *broker.Message, copies []broker.Copy, evs []broker.Evidence) []string {
			return checkEvidence(intact, copies, evs)
		},
		Report: func(p store.Problem) { fmt.Fprintf(stdout, "damaged: %s\n", p) },
	})
	audit := openAuditFor(cfg, logger)
	defer audit.Close()
	auditRestore(audit, in, res, err)
	if err != nil {
		return err
	}
	b := res.Backup
	fmt.Fprintf(stdout, "restored %s into %s: the log of %d leaves (root %x) as of %s; checked %d messages, %d payloads, %d copies, %d evidence: no problems\n",
		in, cfg.Data, b.LogSize, b.LogRoot, b.Created.Format(time.RFC3339), res.Check.Messages, res.Check.Payloads, res.Check.Copies, res.Check.Evidence)
	switch {
	case res.RolledBack:
		logger.Warn("rollback accepted: the restored log is behind the node's high-water mark or forks from it; checkpoints signed after the backup show a fork to peers and witnesses that hold them",
			slog.Uint64("mark_size", res.MarkSize), slog.String("mark_root", fmt.Sprintf("%x", res.MarkRoot)),
			slog.Uint64("restored_size", b.LogSize), slog.String("restored_root", fmt.Sprintf("%x", b.LogRoot)),
			slog.String("record", filepath.Join(cfg.Data, store.RollbackFile)))
	case !res.HadMark:
		logger.Warn("no "+store.MarkFile+" of the replaced node was in the data directory, so the restore cannot tell whether the node signed checkpoints after the backup; if it did, peers and witnesses holding them will see a fork",
			slog.String("backup_created", b.Created.Format(time.RFC3339)), slog.Uint64("restored_size", b.LogSize))
	}
	return nil
}
