package switchboard_test

// The relay the tests talk to: the real switchboard-server binary on ephemeral loopback ports.

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	serverBinary  = flag.String("server", os.Getenv("SWITCHBOARD_TEST_SERVER"), "switchboard-server binary the tests run (absolute path)")
	exampleBinary = flag.String("example", "", "built examples/echo binary (TestExample runs it)")
)

// relay is a running switchboard-server.
type relay struct {
	cmd      *exec.Cmd
	grpc     string
	exited   chan error
	stopOnce sync.Once
	stopErr  error
	log      *tailBuffer
}

// tailBuffer keeps the last bytes the relay logged, shown when a test fails.
type tailBuffer struct {
	mu   sync.Mutex
	data []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data = append(b.data, p...)
	if len(b.data) > 64*1024 {
		b.data = b.data[len(b.data)-64*1024:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.data)
}

// startRelay runs the server on 127.0.0.1:0 for both doors and waits for its gRPC address.
func startRelay(binary string, extra ...string) (*relay, error) {
	args := append([]string{"--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
		"--admin-listen", "", "--slow-consumer-timeout-ms", "2000"}, extra...)
	cmd := exec.Command(binary, args...)
	// The relay reads SWITCHBOARD_* variables as configuration: give it none of ours.
	for _, entry := range os.Environ() {
		if !strings.HasPrefix(entry, "SWITCHBOARD_") {
			cmd.Env = append(cmd.Env, entry)
		}
	}
	log := &tailBuffer{}
	cmd.Stderr = log
	// A test binary that dies (a panic, the -timeout) takes its relay with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &relay{cmd: cmd, exited: make(chan error, 1), log: log}
	found := make(chan string, 1)
	go func() {
		pattern := regexp.MustCompile(`^listening grpc (\S+:\d+)$`)
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			if m := pattern.FindStringSubmatch(lines.Text()); m != nil {
				found <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		r.exited <- cmd.Wait()
	}()
	select {
	case r.grpc = <-found:
		return r, nil
	case err := <-r.exited:
		return nil, fmt.Errorf("%s exited before listening: %v", binary, err)
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("%s printed no gRPC address within 20 s", binary)
	}
}

// stop sends SIGTERM and waits for a clean exit (SIGKILL after the bound); once.
func (r *relay) stop() error {
	r.stopOnce.Do(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case r.stopErr = <-r.exited:
		case <-time.After(20 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.exited
			r.stopErr = fmt.Errorf("the relay did not exit within 20 s of SIGTERM")
		}
	})
	return r.stopErr
}

// crash ends the relay with SIGKILL and waits for it.
func (r *relay) crash() {
	_ = r.cmd.Process.Kill()
	_ = r.stop()
}

var theRelay *relay

func TestMain(m *testing.M) {
	// Pdeathsig follows the thread that started the relay: keep this one for the whole run.
	runtime.LockOSThread()
	flag.Parse()
	if *serverBinary == "" {
		fmt.Fprintln(os.Stderr, "switchboard tests need the relay: go test ... -args -server PATH/switchboard-server (or SWITCHBOARD_TEST_SERVER)")
		os.Exit(2)
	}
	var err error
	theRelay, err = startRelay(*serverBinary)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := theRelay.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		if code == 0 {
			code = 1
		}
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "relay log (last lines):\n%s\n", theRelay.log)
	}
	os.Exit(code)
}
