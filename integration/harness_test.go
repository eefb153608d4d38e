// Package integration runs real kurierd processes and the real kurier CLI
// against each other over mutual TLS on loopback, with real stores.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/internal/logbuf"
)

// binaries built once for the package.
var kurierd, kurier string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kurier-integration")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	kurierd = filepath.Join(dir, "kurierd")
	kurier = filepath.Join(dir, "kurier")
	for bin, pkg := range map[string]string{kurierd: "kurier.dev/kurier/cmd/kurierd", kurier: "kurier.dev/kurier/cmd/kurier"} {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := pgtest.Run(m) // stops the PostgreSQL cluster of TestPostgres_*
	os.RemoveAll(dir)
	os.Exit(code)
}

// nodeProc is a running kurierd -dev process.
type nodeProc struct {
	t      *testing.T
	dir    string
	addr   string
	cmd    *exec.Cmd
	logs   *logbuf.Buffer
	exited chan struct{} // closed once the process has been waited for
	addrc  chan string   // the address, once it listens
}

// startDevNode starts `kurierd -dev` on a free loopback port with its data
// in dir and env added to its environment, and waits until it listens.
func startDevNode(t *testing.T, dir string, env ...string) *nodeProc {
	t.Helper()
	return startDevNodeOn(t, dir, "127.0.0.1:0", env...)
}

// startDevNodeOn is startDevNode listening on listen.
func startDevNodeOn(t *testing.T, dir, listen string, env ...string) *nodeProc {
	t.Helper()
	return startDevNodeArgs(t, dir, []string{"-listen", listen}, env...)
}

// startDevNodeArgs is startDevNode with more flags of kurierd -dev.
func startDevNodeArgs(t *testing.T, dir string, args []string, env ...string) *nodeProc {
	t.Helper()
	n := launchDevNode(t, dir, args, env...)
	n.waitListening()
	return n
}

// launchDevNode starts kurierd -dev with args without waiting for it:
// waitListening waits.
func launchDevNode(t *testing.T, dir string, args []string, env ...string) *nodeProc {
	t.Helper()
	cmd := exec.Command(kurierd, append([]string{"-dev", "-data", dir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &nodeProc{t: t, dir: dir, cmd: cmd, logs: logs, exited: make(chan struct{}), addrc: make(chan string, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "Kurier development node listening on "); ok {
				n.addrc <- strings.TrimSpace(a)
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { cmd.Wait(); close(n.exited) }()
	t.Cleanup(n.stop)
	return n
}

// waitListening waits until the node listens, and sets its address.
func (n *nodeProc) waitListening() {
	n.t.Helper()
	select {
	case n.addr = <-n.addrc:
	case <-n.exited:
		n.t.Fatalf("kurierd exited before listening: %v\n%s", n.cmd.ProcessState, n.logs)
	case <-time.After(60 * time.Second):
		n.t.Fatalf("kurierd did not listen within 60s\n%s", n.logs)
	}
}

// kill stops the node with SIGKILL, as a crash would.
func (n *nodeProc) kill() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		n.t.Fatalf("kill kurierd %d: %v", n.cmd.Process.Pid, err)
	}
	<-n.exited
}

// stop ends the node with SIGTERM, or SIGKILL after 20 s, and waits for it.
func (n *nodeProc) stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(20 * time.Second):
		n.cmd.Process.Kill()
		<-n.exited
	}
}
func (n *nodeProc) identity(name string) string { return filepath.Join(n.dir, "identities", name) }

// run runs the kurier CLI as the identity in idDir against the node and
// returns its stdout; stderr goes into the error.
func (n *nodeProc) run(ctx context.Context, idDir string, args ...string) (string, error) {
	args = append(args, "--id", idDir, "--node", n.addr)
	cmd := exec.CommandContext(ctx, kurier, args...)
	cmd.Env = append(os.Environ(), "KURIER_ID=", "KURIER_NODE=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("kurier %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// runJSON runs a CLI command with --json and decodes its single JSON value.
func (n *nodeProc) runJSON(ctx context.Context, idDir string, out any, args ...string) error {
	stdout, err := n.run(ctx, idDir, append(args, "--json")...)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("decode output of kurier %s: %v\n%s", args[0], err, stdout)
	}
	if dec.More() {
		return fmt.Errorf("kurier %s --json printed more than one JSON value:\n%s", args[0], stdout)
	}
	return nil
}

// anonRSS returns the node process's resident anonymous memory in bytes:
// its heap and stacks, without the store's memory-mapped files, which the
// kernel pages in and out as it likes.
func (n *nodeProc) anonRSS() (int64, error) {
	if runtime.GOOS != "linux" {
		return 0, fmt.Errorf("RssAnon is read from /proc, linux only")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no RssAnon in /proc/%d/status", n.cmd.Process.Pid)
}
