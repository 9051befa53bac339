// Command switchboard-go-peer is the Go peer of the interop tests (tests/interop/run_interop.py):
// one role per process, reporting events as lines on stdout in the same format as
// tests/interop/node_peer.js, so the driver handles both alike.
//
//	switchboard-go-peer respond   --server A --channel C [--mode echo|never|sink|pattern|fail] [--peer-id P]
//	switchboard-go-peer send      --server A --channel C [--size N] [--target P] [--timeout-ms T]
//	switchboard-go-peer broadcast --server A --channel C [--size N]
//	switchboard-go-peer watch     --server A --channel C
//	every role also takes [--token JWT] [--ca-file PEM]
//
// Lines (fields separated by one space, '-' for empty):
//
//	ready <peer_id|-> <version>          joined (respond) or snapshot received (watch)
//	presence <KIND> <version> <peers,>   a presence event (respond, watch)
//	request <id> <sender> <bytes> <sha256> <deadline_ms> <outcome>   a request served (respond)
//	broadcast <sender> <bytes> <sha256>  a broadcast received whole (respond)
//	reset <id> <STATUS>                  an incoming stream was reset (respond)
//	sent <bytes> <sha256>                the request/broadcast body sent (send, broadcast)
//	received <bytes> <sha256>            the response received (send)
//	summary <delivered> <dropped>        the broadcast summary (broadcast)
//	status <grpc code name> <switchboard-status|-> <app code|-> <elapsed_ms> <message...>
//	closed <error|->                     a respond/watch session ended
//
// respond and watch run until stdin closes or SIGTERM.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"

	"switchboard.dev/client/switchboard"
)

const patternBlock = 64 * 1024

var out sync.Mutex

func say(fields ...interface{}) {
	text := make([]string, len(fields))
	for i, field := range fields {
		text[i] = fmt.Sprint(field)
		if text[i] == "" {
			text[i] = "-"
		}
	}
	out.Lock()
	defer out.Unlock()
	fmt.Println(strings.Join(text, " "))
}

// codeNames are gRPC's canonical code names, as the other interop peers print them.
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
	codes.Unauthenticated: "UNAUTHENTICATED",
}

func sayStatus(err error, started time.Time) {
	elapsed := time.Since(started).Milliseconds()
	if err == nil {
		say("status", "OK", "OK", "-", elapsed, "-")
		return
	}
	var e *switchboard.Error
	if !errors.As(err, &e) {
		say("status", "UNKNOWN", "-", "-", elapsed, oneLine(err.Error()))
		return
	}
	status, appCode := e.Status.String(), "-"
	if e.Status == switchboard.StatusUnspecified {
		status = "-"
	}
	if e.Status == switchboard.StatusApplication {
		appCode = strconv.FormatUint(uint64(e.AppCode), 10)
	}
	say("status", codeNames[e.Code], status, appCode, elapsed, oneLine(e.Message))
}

func oneLine(text string) string { return strings.Join(strings.Fields(text), " ") }

func sum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// randomBody is size random bytes, hashed into h as they are read.
type randomBody struct {
	left int64
	h    hash.Hash
}

func (b *randomBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := rand.Read(p)
	b.h.Write(p[:n])
	b.left -= int64(n)
	return n, err
}

// pattern writes block i of the interop driver's response pattern (run_interop.py).
func pattern(index int) []byte {
	digest := sha256.Sum256([]byte(strconv.Itoa(index)))
	block := make([]byte, 0, patternBlock)
	for len(block) < patternBlock {
		block = append(block, digest[:]...)
	}
	return block
}

func serve(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter, mode string) error {
	h := sha256.New()
	var size int64
	outcome := "ok"
	deadline := int64(0)
	if !req.Deadline.IsZero() {
		deadline = time.Until(req.Deadline).Milliseconds()
	}
	defer func() { say("request", req.ID, req.Sender, size, sum(h), deadline, outcome) }()
	fail := func(err error) error {
		var e *switchboard.Error
		if errors.As(err, &e) {
			outcome = "error:" + e.Status.String()
			say("reset", req.ID, e.Status)
		} else {
			outcome = "error:" + oneLine(err.Error())
		}
		return err
	}
	if mode == "never" {
		<-ctx.Done()
		_, err := req.Body.Read(make([]byte, 1))
		var e *switchboard.Error
		if errors.As(err, &e) {
			say("reset", req.ID, e.Status)
			outcome = "reset:" + e.Status.String()
		} else {
			outcome = "none"
		}
		return nil
	}
	var sink io.Writer = h
	if mode == "echo" {
		sink = io.MultiWriter(h, w)
	}
	n, err := io.Copy(sink, req.Body)
	size = n
	if err != nil {
		return fail(err)
	}
	if mode == "fail" {
		outcome = "failed"
		return switchboard.ApplicationError(7, fmt.Sprintf("refused %d bytes", n))
	}
	if mode == "pattern" {
		want, _ := strconv.ParseInt(req.Metadata["size"], 10, 64)
		for at, index := int64(0), 0; at < want; at, index = at+patternBlock, index+1 {
			block := pattern(index)
			if want-at < patternBlock {
				block = block[:want-at]
			}
			if _, err := w.Write(block); err != nil {
				return fail(err)
			}
		}
	}
	return nil
}

func presenceLine(event switchboard.PresenceEvent) {
	say("presence", event.Kind, event.Version, strings.Join(event.Peers, ","))
}

// untilStopped is done when stdin closes or on SIGTERM/SIGINT.
func untilStopped(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := signal.NotifyContext(parent, syscall.SIGTERM, os.Interrupt)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return ctx, cancel
}

func respond(client *switchboard.Client, options map[string]string) error {
	ctx, cancel := untilStopped(context.Background())
	defer cancel()
	mode := options["mode"]
	if mode == "" {
		mode = "echo"
	}
	var respondOptions []switchboard.RespondOption
	if options["peer-id"] != "" {
		respondOptions = append(respondOptions, switchboard.WithPeerID(options["peer-id"]))
	}
	respondOptions = append(respondOptions, switchboard.OnPresence(presenceLine),
		switchboard.OnBroadcast(func(ctx context.Context, msg *switchboard.Request) error {
			h := sha256.New()
			n, err := io.Copy(h, msg.Body)
			if err != nil {
				var e *switchboard.Error
				if errors.As(err, &e) {
					say("reset", msg.ID, e.Status)
				}
				return err
			}
			say("broadcast", msg.Sender, n, sum(h))
			return nil
		}))
	responder, err := client.Respond(ctx, options["channel"],
		func(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
			return serve(ctx, req, w, mode)
		}, respondOptions...)
	if err != nil {
		return err
	}
	_, version := responder.Peers()
	say("ready", responder.PeerID(), version)
	select {
	case <-ctx.Done():
	case <-responder.Done():
	}
	responder.Close()
	if err := responder.Err(); err != nil {
		say("closed", oneLine(err.Error()))
	} else {
		say("closed", "-")
	}
	return nil
}

func send(client *switchboard.Client, options map[string]string) error {
	size, _ := strconv.ParseInt(options["size"], 10, 64)
	ctx := context.Background()
	if ms, err := strconv.Atoi(options["timeout-ms"]); err == nil && ms > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
	}
	var callOptions []switchboard.CallOption
	if options["target"] != "" {
		callOptions = append(callOptions, switchboard.ToPeer(options["target"]))
	}
	started := time.Now()
	sent, received := sha256.New(), sha256.New()
	var count int64
	response, err := client.Send(ctx, options["channel"], &randomBody{left: size, h: sent}, callOptions...)
	if err == nil {
		count, err = io.Copy(received, response)
		response.Close()
	}
	say("sent", size, sum(sent))
	say("received", count, sum(received))
	sayStatus(err, started)
	return nil
}

func broadcast(client *switchboard.Client, options map[string]string) error {
	size, _ := strconv.ParseInt(options["size"], 10, 64)
	started := time.Now()
	h := sha256.New()
	summary, err := client.Broadcast(context.Background(), options["channel"], &randomBody{left: size, h: h})
	say("sent", size, sum(h))
	if err == nil {
		say("summary", summary.Delivered, summary.Dropped)
	}
	sayStatus(err, started)
	return nil
}

func watch(client *switchboard.Client, options map[string]string) error {
	ctx, cancel := untilStopped(context.Background())
	defer cancel()
	events, err := client.WatchPeers(ctx, options["channel"])
	if err != nil {
		return err
	}
	first := true
	for event := range events {
		if event.Err != nil {
			say("closed", oneLine(event.Err.Error()))
			return nil
		}
		presenceLine(event)
		if first {
			first = false
			say("ready", "-", event.Version)
		}
	}
	say("closed", "-")
	return nil
}

func parseArgs(args []string) (string, map[string]string, error) {
	if len(args) == 0 {
		return "", nil, errors.New("usage: switchboard-go-peer ROLE --server A --channel C [--key value ...]")
	}
	options := map[string]string{}
	rest := args[1:]
	for i := 0; i < len(rest); i += 2 {
		if !strings.HasPrefix(rest[i], "--") || i+1 >= len(rest) {
			return "", nil, fmt.Errorf("bad argument %q", rest[i])
		}
		options[strings.TrimPrefix(rest[i], "--")] = rest[i+1]
	}
	if options["server"] == "" || options["channel"] == "" {
		return "", nil, errors.New("--server and --channel are required")
	}
	return args[0], options, nil
}

func main() {
	role, options, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchboard-go-peer:", err)
		os.Exit(2)
	}
	dialOptions := []switchboard.DialOption{switchboard.WithToken(options["token"])}
	if options["ca-file"] != "" {
		pem, err := os.ReadFile(options["ca-file"])
		if err != nil {
			fmt.Fprintln(os.Stderr, "switchboard-go-peer:", err)
			os.Exit(2)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		dialOptions = append(dialOptions, switchboard.WithTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}))
	}
	client, err := switchboard.Dial(context.Background(), options["server"], dialOptions...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchboard-go-peer:", err)
		os.Exit(1)
	}
	defer client.Close()
	roles := map[string]func(*switchboard.Client, map[string]string) error{
		"respond": respond, "send": send, "broadcast": broadcast, "watch": watch,
	}
	run, ok := roles[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "switchboard-go-peer: unknown role %q\n", role)
		os.Exit(2)
	}
	if err := run(client, options); err != nil {
		fmt.Fprintln(os.Stderr, "switchboard-go-peer:", err)
		sayStatus(err, time.Now())
		os.Exit(1)
	}
}
