package switchboard_test

// Locating: clients pointed at one relay of a real cluster (Debian's etcd, the -etcd flag, and
// relay processes) serve, send, broadcast and list peers on channels either relay owns, follow
// channels a joining relay takes over (carried calls name it; refused calls locate again);
// Locate and concurrent first calls on a relay alone.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"switchboard.dev/client/switchboard"
)

var etcdBinary = flag.String("etcd", "", "etcd binary for the cluster tests (absolute path); empty: they are skipped")

// pollUntil calls ready every 50 ms until it reports true or within passes.
func pollUntil(t *testing.T, within time.Duration, what string, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ready() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port
}

// startProcess runs binary with args, its output kept for the failure report, ended with
// SIGTERM (then SIGKILL) at the end of the test. It returns the process's stdout.
func startProcess(t *testing.T, name string, binary string, args ...string) io.Reader {
	t.Helper()
	cmd := exec.Command(binary, args...)
	for _, entry := range os.Environ() {
		if !strings.HasPrefix(entry, "SWITCHBOARD_") {
			cmd.Env = append(cmd.Env, entry)
		}
	}
	log := &tailBuffer{}
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	exited := make(chan struct{})
	lines, output := io.Pipe()
	go func() {
		_, _ = io.Copy(io.MultiWriter(output, log), stdout)
		_ = output.Close()
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("%s did not exit within 20 s of SIGTERM", name)
		}
		if t.Failed() {
			t.Logf("%s log (last lines):\n%s", name, log)
		}
	})
	return lines
}

// clusterRelay is one relay of the test cluster and its three doors.
type clusterRelay struct {
	node, native, grpc, admin string
}

func startClusterRelay(t *testing.T, host, etcdURL, node string) clusterRelay {
	t.Helper()
	ephemeral := host + ":0"
	stdout := startProcess(t, node, *serverBinary, "--listen", ephemeral, "--grpc-listen", ephemeral,
		"--admin-listen", ephemeral, "--cluster-etcd", etcdURL, "--node-id", node, "--cluster-lease-ttl", "2s")
	relay := clusterRelay{node: node}
	found := make(chan clusterRelay, 1)
	go func() {
		pattern := regexp.MustCompile(`^listening (core|grpc|admin) (\S+:\d+)$`)
		lines := bufio.NewScanner(stdout)
		sent := false
		for lines.Scan() {
			if m := pattern.FindStringSubmatch(lines.Text()); m != nil {
				switch m[1] {
				case "core":
					relay.native = m[2]
				case "grpc":
					relay.grpc = m[2]
				case "admin":
					relay.admin = m[2]
				}
				if !sent && relay.native != "" && relay.grpc != "" && relay.admin != "" {
					found <- relay
					sent = true
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case relay = <-found:
		return relay
	case <-time.After(20 * time.Second):
		t.Fatalf("relay %s printed no core, grpc and admin addresses within 20 s", node)
	}
	return relay
}

// adminGet returns the status and body of GET path on the relay's admin door.
func (r clusterRelay) adminGet(path string) (int, string) {
	client := http.Client{Timeout: 2 * time.Second}
	response, err := client.Get("http://" + r.admin + path)
	if err != nil {
		return 0, ""
	}
	defer response.Body.Close()
	body, _ := io.ReadAll(response.Body)
	return response.StatusCode, string(body)
}

// carriedCalls returns the relay's switchboard_cluster_carried_calls_total.
func (r clusterRelay) carriedCalls(t *testing.T) int {
	t.Helper()
	code, metrics := r.adminGet("/metrics")
	if code != http.StatusOK {
		t.Fatalf("%s /metrics: %d", r.node, code)
	}
	m := regexp.MustCompile(`(?m)^switchboard_cluster_carried_calls_total (\d+)$`).FindStringSubmatch(metrics)
	if m == nil {
		t.Fatalf("%s /metrics has no switchboard_cluster_carried_calls_total", r.node)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// markedCarried makes every call of the client look carried already (switchboard-carried-by),
// which a relay never carries again: one that does not serve the channel refuses it.
func markedCarried() switchboard.DialOption {
	mark := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "switchboard-carried-by", "test")
	}
	return switchboard.WithGRPCDialOptions(
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any,
			cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(mark(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn,
			method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(mark(ctx), desc, cc, method, opts...)
		}))
}

// unaryHeaders keeps the initial metadata of the client's unary calls (ListPeers, Locate).
func unaryHeaders(headers chan<- metadata.MD) switchboard.DialOption {
	return switchboard.WithGRPCDialOptions(grpc.WithUnaryInterceptor(func(ctx context.Context,
		method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var header metadata.MD
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&header))...)
		select {
		case headers <- header:
		default:
		}
		return err
	}))
}

// awaitMembers waits until each relay is ready and sees n members.
func awaitMembers(t *testing.T, n int, relays ...clusterRelay) {
	t.Helper()
	for _, r := range relays {
		r := r
		pollUntil(t, 30*time.Second, fmt.Sprintf("%s ready with %d members", r.node, n), func() bool {
			if code, _ := r.adminGet("/healthz"); code != http.StatusOK {
				return false
			}
			code, metrics := r.adminGet("/metrics")
			return code == http.StatusOK && strings.Contains(metrics, fmt.Sprintf("\nswitchboard_cluster_members %d\n", n))
		})
	}
}

// startCluster runs etcd and two relays (r1 on 127.0.0.1, r2 on 127.0.0.2) that see each other;
// it returns them and etcd's URL.
func startCluster(t *testing.T) (clusterRelay, clusterRelay, string) {
	t.Helper()
	if *etcdBinary == "" {
		t.Skip("no etcd binary (-etcd PATH): the cluster tests are skipped")
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	etcdOutput := startProcess(t, "etcd", *etcdBinary, "--data-dir", t.TempDir(),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL)
	go func() { _, _ = io.Copy(io.Discard, etcdOutput) }()
	pollUntil(t, 30*time.Second, "etcd /health", func() bool {
		client := http.Client{Timeout: 2 * time.Second}
		response, err := client.Get(clientURL + "/health")
		if err != nil {
			return false
		}
		defer response.Body.Close()
		return response.StatusCode == http.StatusOK
	})
	r1 := startClusterRelay(t, "127.0.0.1", clientURL, "r1")
	r2 := startClusterRelay(t, "127.0.0.2", clientURL, "r2")
	awaitMembers(t, 2, r1, r2)
	return r1, r2, clientURL
}

func dialRelay(t *testing.T, address string, options ...switchboard.DialOption) *switchboard.Client {
	t.Helper()
	client, err := switchboard.Dial(within(t, 10*time.Second), address, append(options, switchboard.WithBlock())...)
	if err != nil {
		t.Fatalf("Dial %s: %v", address, err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// channelsOwned returns a channel that r1 serves and one that r2 serves, as r1 locates them.
func channelsOwned(t *testing.T, client *switchboard.Client, r2 clusterRelay) (string, string) {
	t.Helper()
	var onR1, onR2 string
	for i := 0; i < 200 && (onR1 == "" || onR2 == ""); i++ {
		channel := switchboard.NewID()
		where, err := client.Locate(within(t, 10*time.Second), channel)
		if err != nil {
			t.Fatalf("Locate: %v", err)
		}
		switch {
		case where.Here:
			onR1 = channel
		case where.NodeID == "r2":
			if where.GRPCAddress != r2.grpc || where.NativeAddress != r2.native || where.Revision == 0 {
				t.Fatalf("Locate answered %+v; r2 is %+v", where, r2)
			}
			onR2 = channel
		default:
			t.Fatalf("Locate answered %+v", where)
		}
	}
	if onR1 == "" || onR2 == "" {
		t.Fatalf("200 random channels did not land on both relays (r1 %q, r2 %q)", onR1, onR2)
	}
	return onR1, onR2
}

// exchange: through clients pointed at r1, a responder and a sender on channel exchange a
// request and a broadcast, and the channel's peers show the responder.
func exchange(t *testing.T, r1 clusterRelay, channel string) {
	t.Helper()
	serving := dialRelay(t, r1.grpc)
	sending := dialRelay(t, r1.grpc)
	broadcasts := make(chan string, 1)
	responder := respond(t, serving, channel, echo, switchboard.OnBroadcast(
		func(ctx context.Context, msg *switchboard.Request) error {
			body, err := io.ReadAll(msg.Body)
			broadcasts <- string(body)
			return err
		}))

	response, err := sending.Send(within(t, 10*time.Second), channel, strings.NewReader("ping "+channel))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	answer, err := io.ReadAll(response)
	if err != nil || string(answer) != "ping "+channel {
		t.Fatalf("Send answered %q, %v", answer, err)
	}

	summary, err := sending.Broadcast(within(t, 10*time.Second), channel, strings.NewReader("to all"))
	if err != nil || summary.Delivered != 1 || summary.Dropped != 0 {
		t.Fatalf("Broadcast: %+v, %v", summary, err)
	}
	if got := await(t, broadcasts, "the broadcast"); got != "to all" {
		t.Fatalf("the responder received the broadcast %q", got)
	}

	peers, _, err := sending.ListPeers(within(t, 10*time.Second), channel)
	if err != nil || len(peers) != 1 || peers[0] != responder.PeerID() {
		t.Fatalf("ListPeers: %v, %v; the responder is %s", peers, err, responder.PeerID())
	}
	events, err := sending.WatchPeers(within(t, 10*time.Second), channel)
	if err != nil {
		t.Fatalf("WatchPeers: %v", err)
	}
	if first := await(t, events, "the snapshot"); first.Kind != switchboard.PresenceSnapshot ||
		len(first.Peers) != 1 || first.Peers[0] != responder.PeerID() {
		t.Fatalf("WatchPeers snapshot %+v; the responder is %s", first, responder.PeerID())
	}
}

func TestClusterLocating(t *testing.T) {
	r1, r2, etcdURL := startCluster(t)
	onR1, onR2 := channelsOwned(t, dialRelay(t, r1.grpc), r2)

	t.Run("ChannelOnTheOtherRelay", func(t *testing.T) {
		exchange(t, r1, onR2)
		// The responder really is on r2: r2 itself, asked without locating, lists it.
		peers, _, err := dialRelay(t, r2.grpc, switchboard.WithLocate(false)).ListPeers(within(t, 10*time.Second), onR2)
		if err != nil || len(peers) != 1 {
			t.Fatalf("ListPeers on r2: %v, %v", peers, err)
		}
	})
	t.Run("ChannelOnTheRelayDialled", func(t *testing.T) {
		exchange(t, r1, onR1)
	})
	t.Run("WithoutLocating", func(t *testing.T) {
		// r1 carries the calls for r2's channel and names r2; the client stays on r1.
		responder := respond(t, dialRelay(t, r2.grpc, switchboard.WithLocate(false)), onR2, echo)
		headers := make(chan metadata.MD, 1)
		client := dialRelay(t, r1.grpc, switchboard.WithLocate(false), unaryHeaders(headers))
		carried := r1.carriedCalls(t)
		peers, _, err := client.ListPeers(within(t, 10*time.Second), onR2)
		if err != nil || len(peers) != 1 || peers[0] != responder.PeerID() {
			t.Fatalf("ListPeers on r1 for r2's channel without locating: %v, %v", peers, err)
		}
		if servedBy := (<-headers).Get("switchboard-served-by"); len(servedBy) != 1 || servedBy[0] != r2.grpc {
			t.Fatalf("ListPeers carried by r1: switchboard-served-by %v; r2 is %s", servedBy, r2.grpc)
		}
		for i := 0; i < 2; i++ {
			response, err := client.Send(within(t, 10*time.Second), onR2, strings.NewReader("x"))
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if answer, err := io.ReadAll(response); err != nil || string(answer) != "x" {
				t.Fatalf("Send on r1 for r2's channel without locating: %q, %v", answer, err)
			}
		}
		if now := r1.carriedCalls(t); now != carried+3 {
			t.Fatalf("r1 carried %d calls, not 3 (ListPeers and two Sends)", now-carried)
		}

		// A call carried already is refused by a relay that does not serve its channel.
		marked := dialRelay(t, r1.grpc, switchboard.WithLocate(false), markedCarried())
		_, _, err = marked.ListPeers(within(t, 10*time.Second), onR2)
		var e *switchboard.Error
		if !errors.As(err, &e) || e.Code != codes.Unavailable || !errors.Is(err, switchboard.ErrRefused) ||
			!strings.HasPrefix(e.Message, "channel is served by relay r2") || !strings.Contains(e.Message, r2.grpc) {
			t.Fatalf("ListPeers marked carried on r1 for r2's channel: %v", err)
		}
		response, err := marked.Send(within(t, 10*time.Second), onR2, strings.NewReader("x"))
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		if _, err := io.ReadAll(response); !errors.As(err, &e) || e.Code != codes.Unavailable ||
			!strings.HasPrefix(e.Message, "channel is served by relay r2") {
			t.Fatalf("Send marked carried on r1 for r2's channel: %v", err)
		}
	})
	t.Run("ChannelsMoveToANewRelay", func(t *testing.T) {
		// Clients that located channels before r3 joins the cluster, on stale answers after.
		joining := dialRelay(t, r1.grpc)
		sending := dialRelay(t, r1.grpc)
		refused := dialRelay(t, r1.grpc, markedCarried())
		asking := dialRelay(t, r1.grpc, switchboard.WithLocate(false))
		channels := make([]string, 60)
		before := make(map[string]clusterRelay, len(channels)) // where each was served
		for i := range channels {
			channels[i] = switchboard.NewID()
			for _, client := range []*switchboard.Client{joining, sending, refused} {
				if _, _, err := client.ListPeers(within(t, 10*time.Second), channels[i]); err != nil {
					t.Fatalf("ListPeers: %v", err)
				}
			}
			where, err := asking.Locate(within(t, 10*time.Second), channels[i])
			if err != nil {
				t.Fatalf("Locate: %v", err)
			}
			before[channels[i]] = r1
			if where.NodeID == "r2" {
				before[channels[i]] = r2
			}
		}
		r3 := startClusterRelay(t, "127.0.0.3", etcdURL, "r3")
		awaitMembers(t, 3, r1, r2, r3)
		var moved []string
		for _, channel := range channels {
			where, err := asking.Locate(within(t, 10*time.Second), channel)
			if err != nil {
				t.Fatalf("Locate: %v", err)
			}
			if where.NodeID == "r3" {
				moved = append(moved, channel)
			}
		}
		if len(moved) < 3 {
			t.Fatalf("%d of %d channels moved to r3", len(moved), len(channels))
		}
		// Respond on the stale relay is carried to r3.
		responder := respond(t, joining, moved[0], echo)
		peers, _, err := dialRelay(t, r3.grpc, switchboard.WithLocate(false)).ListPeers(within(t, 10*time.Second), moved[0])
		if err != nil || len(peers) != 1 || peers[0] != responder.PeerID() {
			t.Fatalf("ListPeers on r3: %v, %v; the responder is %s", peers, err, responder.PeerID())
		}
		// A Send on the stale relay is carried to r3, which it names: the client's next Send
		// goes straight to r3 (the stale relay carries no more).
		stale := before[moved[0]]
		for _, body := range []string{"stale", "fresh", "again"} {
			carried := stale.carriedCalls(t)
			response, err := sending.Send(within(t, 10*time.Second), moved[0], strings.NewReader(body))
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if answer, err := io.ReadAll(response); err != nil || string(answer) != body {
				t.Fatalf("Send %q: %q, %v", body, answer, err)
			}
			want := 0
			if body == "stale" {
				want = 1
			}
			if now := stale.carriedCalls(t); now-carried != want {
				t.Fatalf("Send %q: %s carried %d calls, not %d", body, stale.node, now-carried, want)
			}
		}
		// So does ListPeers.
		stale = before[moved[1]]
		for i := 0; i < 2; i++ {
			carried := stale.carriedCalls(t)
			if _, _, err := sending.ListPeers(within(t, 10*time.Second), moved[1]); err != nil {
				t.Fatalf("ListPeers on a stale location: %v", err)
			}
			if now := stale.carriedCalls(t); now-carried != 1-i {
				t.Fatalf("ListPeers %d: %s carried %d calls, not %d", i, stale.node, now-carried, 1-i)
			}
		}

		// A call the stale relay refuses (marked carried already) is not retried for a Send
		// (its body may be gone): it fails, the answer is forgotten, the next Send goes to r3.
		response, err := refused.Send(within(t, 10*time.Second), moved[0], strings.NewReader("refused"))
		if err == nil {
			_, err = io.ReadAll(response)
		}
		var e *switchboard.Error
		if !errors.As(err, &e) || e.Code != codes.Unavailable || !strings.HasPrefix(e.Message, "channel is served by relay r3") {
			t.Fatalf("Send on a stale location, refused: %v", err)
		}
		response, err = refused.Send(within(t, 10*time.Second), moved[0], strings.NewReader("fresh"))
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		if answer, err := io.ReadAll(response); err != nil || string(answer) != "fresh" {
			t.Fatalf("Send after locating again: %q, %v", answer, err)
		}
		// ListPeers refused is retried once after locating again.
		if _, _, err := refused.ListPeers(within(t, 10*time.Second), moved[2]); err != nil {
			t.Fatalf("ListPeers on a stale location, refused: %v", err)
		}
	})
}

// A relay alone serves every channel: Locate answers here, at revision 0.
func TestLocateAlone(t *testing.T) {
	where, err := dial(t).Locate(within(t, 10*time.Second), switchboard.NewID())
	if err != nil || where != (switchboard.Location{Here: true}) {
		t.Fatalf("Locate on a relay alone: %+v, %v", where, err)
	}
	_, err = dial(t).Locate(within(t, 10*time.Second), "not-a-uuid")
	var e *switchboard.Error
	if !errors.As(err, &e) || e.Code != codes.InvalidArgument || !errors.Is(err, switchboard.ErrProtocolError) {
		t.Fatalf("Locate of a malformed channel: %v", err)
	}
}

// Concurrent first calls for one channel (which share its Locate) all get through.
func TestConcurrentFirstCalls(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	respond(t, dial(t), channel, echo)
	failures := make(chan error, 8)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if i%2 == 0 {
				peers, _, err := client.ListPeers(within(t, 10*time.Second), channel)
				if err == nil && len(peers) != 1 {
					err = fmt.Errorf("peers %v", peers)
				}
				failures <- err
				return
			}
			response, err := client.Send(within(t, 10*time.Second), channel, strings.NewReader("x"))
			if err == nil {
				var answer []byte
				if answer, err = io.ReadAll(response); err == nil && string(answer) != "x" {
					err = fmt.Errorf("answer %q", answer)
				}
			}
			failures <- err
		}(i)
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		if err != nil {
			t.Fatal(err)
		}
	}
}
