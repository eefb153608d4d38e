package pgtest

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
)

// password is the postgres role's password on the clusters this test
// binary starts, new for each binary. Connections over 127.0.0.1 must
// give it (scram-sha-256): any user of the machine can reach a loopback
// port, and trust there would let them into the tests' databases. The
// socket, in a folder only the server's user may enter, stays trust, for
// PostgreSQL's own tools.
var password = rand.Text()

// authArgs are initdb's arguments for that authentication; pwfile holds
// the password, written into dir for the server's user cred.
func authArgs(dir string, cred *syscall.Credential) ([]string, error) {
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(pwfile, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	return []string{"--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile=" + pwfile}, nil
}
