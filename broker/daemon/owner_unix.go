//go:build unix

package daemon

import (
	"fmt"
	"os"
	"syscall"
)

// checkOwner refuses to work on the data directory as another user than
// the one it belongs to: files a backup or restore run by root (sudo)
// would write there are files the node, running as its own user, cannot
// open afterwards. A directory that does not exist yet passes.
func checkOwner(dir, command string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if euid := os.Geteuid(); int(st.Uid) != euid {
		return fmt.Errorf("%s belongs to uid %d, but %s runs as uid %d: run it as the node's user (sudo -u <that user> kurierd %s ...), so that the node can open what it writes", dir, st.Uid, command, euid, command)
	}
	return nil
}
