package switchboard_test

// The client against a real relay: request/response, streaming, concurrency and per-request
// credit, broadcast, presence, and the error statuses.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"switchboard.dev/client/switchboard"
)

const mib = 1 << 20

// within bounds every wait of a test: a failure, never a hang.
func within(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T) *switchboard.Client {
	t.Helper()
	client, err := switchboard.Dial(within(t, 10*time.Second), theRelay.grpc, switchboard.WithBlock())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func respond(t *testing.T, client *switchboard.Client, channel string, handler switchboard.Handler, options ...switchboard.RespondOption) *switchboard.Responder {
	t.Helper()
	responder, err := client.Respond(within(t, 10*time.Second), channel, handler, options...)
	if err != nil {
		t.Fatalf("Respond: %v", err)
	}
	t.Cleanup(func() { responder.Close() })
	return responder
}

func echo(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
	_, err := io.Copy(w, req.Body)
	return err
}

// patterned is n reproducible pseudo-random bytes.
func patterned(seed int64, n int64) io.Reader {
	return io.LimitReader(rand.New(rand.NewSource(seed)), n)
}

func digest(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return n, sum, err
}

// await receives from ch within 10 s, or fails the test.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10 s", what)
	}
	var zero T
	return zero
}

func wantStatus(t *testing.T, err error, sentinel error, code codes.Code) *switchboard.Error {
	t.Helper()
	var e *switchboard.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *switchboard.Error", err, err)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v: status %v, want %v", err, e.Status, sentinel.(*switchboard.Error).Status)
	}
	if e.Code != code {
		t.Fatalf("error %v: gRPC code %v, want %v", err, e.Code, code)
	}
	return e
}

func TestRoundTrip(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	seen := make(chan *switchboard.Request, 1)
	respond(t, client, channel, func(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return err
		}
		seen <- req
		_, err = fmt.Fprintf(w, "hello, %s", body)
		return err
	})
	ctx := within(t, 10*time.Second)
	response, err := client.Send(ctx, channel, strings.NewReader("gopher"),
		switchboard.WithMetadata(map[string]string{"tag": "go"}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(response)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	if err := response.Close(); err != nil {
		t.Fatalf("Close after an OK response: %v", err)
	}
	if string(got) != "hello, gopher" {
		t.Fatalf("response %q", got)
	}
	req := await(t, seen, "the request at the responder")
	if req.Metadata["tag"] != "go" || req.Sender != "" || req.Broadcast {
		t.Fatalf("the responder saw metadata %v sender %q broadcast %v", req.Metadata, req.Sender, req.Broadcast)
	}
	if left := time.Until(req.Deadline); req.Deadline.IsZero() || left <= 0 || left > 11*time.Second {
		t.Fatalf("the responder saw deadline %v (in %v), want the sender's 10 s", req.Deadline, left)
	}
}

// A 16 MiB request echoed as it streams: the response's first bytes arrive before the request
// body has ended (else this test cannot finish), and both ends' sha256 agree.
func TestStreamedEcho16MiB(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	responderSum := make(chan [32]byte, 1)
	respond(t, client, channel, func(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
		h := sha256.New()
		_, err := io.Copy(io.MultiWriter(w, h), req.Body)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		responderSum <- sum
		return err
	})
	const size = 16 * mib
	ctx := within(t, 60*time.Second)
	body, bodyWriter := io.Pipe()
	firstByte := make(chan struct{})
	sentSum := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		source := patterned(1, size)
		out := io.MultiWriter(bodyWriter, h)
		if _, err := io.CopyN(out, source, size-mib); err != nil {
			bodyWriter.CloseWithError(err)
			return
		}
		select { // the last MiB only once the response is flowing
		case <-firstByte:
		case <-ctx.Done():
			bodyWriter.CloseWithError(ctx.Err())
			return
		}
		_, err := io.Copy(out, source)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		sentSum <- sum
		bodyWriter.CloseWithError(err)
	}()
	response, err := client.Send(ctx, channel, body)
	if err != nil {
		t.Fatal(err)
	}
	defer response.Close()
	first := make([]byte, 1)
	if _, err := io.ReadFull(response, first); err != nil {
		t.Fatalf("first response byte: %v", err)
	}
	close(firstByte)
	n, sum, err := digest(io.MultiReader(bytes.NewReader(first), response))
	if err != nil {
		t.Fatalf("response after %d bytes: %v", n, err)
	}
	sent := await(t, sentSum, "the sent sha256")
	if n != size || sum != sent {
		t.Fatalf("echo: %d bytes sha256 %x, sent %d bytes sha256 %x", n, sum, size, sent)
	}
	if got := await(t, responderSum, "the responder's sha256"); got != sent {
		t.Fatalf("the responder's sha256 %x, sent %x", got, sent)
	}
}

// One responder serves 8 requests at once: every handler waits until all 8 are in flight.
func TestConcurrentRequests(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	const count = 8
	var mu sync.Mutex
	inFlight := 0
	allIn := make(chan struct{})
	respond(t, client, channel, func(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return err
		}
		mu.Lock()
		inFlight++
		if inFlight == count {
			close(allIn)
		}
		mu.Unlock()
		select {
		case <-allIn:
		case <-ctx.Done():
			return ctx.Err()
		}
		_, err = w.Write(bytes.ToUpper(body))
		return err
	})
	ctx := within(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, count)
	for i := 0; i < count; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := fmt.Sprintf("request %d ", i) + strings.Repeat("x", i*10000)
			response, err := client.Send(ctx, channel, strings.NewReader(body))
			if err == nil {
				var got []byte
				got, err = io.ReadAll(response)
				if err == nil && string(got) != strings.ToUpper(body) {
					err = fmt.Errorf("request %d: response %.40q...", i, got)
				}
			}
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Per-request credit: a requester that stops reading a large response does not hold up
// another request to the same responder, and its own response resumes when it reads again.
// 64 MiB is more than every buffer on the way holds (gRPC's windows, the relay's), so the big
// handler is held on its credit while the small requests complete.
func TestSlowRequesterDoesNotStallOthers(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	const big = 64 * mib
	bigWritten := make(chan struct{})
	responder := respond(t, client, channel, func(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return err
		}
		if req.Metadata["size"] == "big" {
			_, err := io.Copy(w, patterned(2, big))
			close(bigWritten)
			return err
		}
		_, err := io.WriteString(w, "small")
		return err
	})
	if !responder.StreamWindows() {
		t.Fatal("the relay granted no stream windows")
	}
	ctx := within(t, 60*time.Second)
	stalled, err := client.Send(ctx, channel, nil, switchboard.WithMetadata(map[string]string{"size": "big"}))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	first := make([]byte, 1024)
	if _, err := io.ReadFull(stalled, first); err != nil {
		t.Fatalf("the big response did not start: %v", err)
	}
	for i := 0; i < 5; i++ { // not reading `stalled` meanwhile
		response, err := client.Send(within(t, 10*time.Second), channel, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(response)
		if err != nil || string(got) != "small" {
			t.Fatalf("request %d beside the stalled one: %q, %v", i, got, err)
		}
	}
	select {
	case <-bigWritten:
		t.Fatal("the big response was written whole while unread: nothing held it back")
	default:
	}
	n, sum, err := digest(io.MultiReader(bytes.NewReader(first), stalled))
	_, want, _ := digest(patterned(2, big))
	if err != nil || n != big || sum != want {
		t.Fatalf("the stalled response: %d bytes, %v, sha256 match %v", n, err, sum == want)
	}
}

func TestBroadcastSummary(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	type received struct {
		sender string
		size   int64
		sum    [32]byte
	}
	got := make(chan received, 4)
	onBroadcast := switchboard.OnBroadcast(func(ctx context.Context, msg *switchboard.Request) error {
		n, sum, err := digest(msg.Body)
		if err == nil {
			got <- received{msg.Sender, n, sum}
		}
		return err
	})
	noRequests := func(context.Context, *switchboard.Request, switchboard.ResponseWriter) error { return nil }
	first := respond(t, client, channel, noRequests, onBroadcast)
	respond(t, client, channel, noRequests, onBroadcast)
	const size = 300 * 1024 // several chunks, more than one stream window
	_, want, _ := digest(patterned(3, size))

	summary, err := client.Broadcast(within(t, 30*time.Second), channel, patterned(3, size))
	if err != nil {
		t.Fatal(err)
	}
	if summary != (switchboard.Summary{Delivered: 2, Dropped: 0}) {
		t.Fatalf("summary %+v, want 2 delivered", summary)
	}
	for i := 0; i < 2; i++ {
		r := await(t, got, "a broadcast at a receiver")
		if r.sender != "" || r.size != size || r.sum != want {
			t.Fatalf("a receiver got %d bytes from %q, sha256 match %v", r.size, r.sender, r.sum == want)
		}
	}

	// Speaking for the first peer: it does not receive its own broadcast.
	summary, err = client.Broadcast(within(t, 30*time.Second), channel, strings.NewReader("from first"),
		switchboard.AsPeer(first.PeerID()))
	if err != nil {
		t.Fatal(err)
	}
	if summary != (switchboard.Summary{Delivered: 1}) {
		t.Fatalf("summary %+v, want 1 delivered", summary)
	}
	if r := await(t, got, "the broadcast at the other receiver"); r.sender != first.PeerID() || r.size != int64(len("from first")) {
		t.Fatalf("the other receiver got %d bytes from %q", r.size, r.sender)
	}
	select {
	case r := <-got:
		t.Fatalf("an extra delivery: %+v", r)
	default:
	}
}

func nextEvent(t *testing.T, events <-chan switchboard.PresenceEvent) switchboard.PresenceEvent {
	t.Helper()
	select {
	case event, ok := <-events:
		if !ok {
			t.Fatal("the presence channel closed")
		}
		if event.Err != nil {
			t.Fatalf("presence failed: %v", event.Err)
		}
		return event
	case <-time.After(10 * time.Second):
		t.Fatal("no presence event within 10 s")
	}
	return switchboard.PresenceEvent{}
}

func TestPresence(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watched, err := client.WatchPeers(watchCtx, channel)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := nextEvent(t, watched)
	if snapshot.Kind != switchboard.PresenceSnapshot || len(snapshot.Peers) != 0 {
		t.Fatalf("first event %+v, want an empty snapshot", snapshot)
	}

	sessionEvents := make(chan switchboard.PresenceEvent, 16)
	first := respond(t, client, channel, echo, switchboard.OnPresence(func(e switchboard.PresenceEvent) { sessionEvents <- e }))
	if e := nextEvent(t, watched); e.Kind != switchboard.PresenceJoined || e.Peers[0] != first.PeerID() || e.Version != snapshot.Version+1 {
		t.Fatalf("event %+v, want JOINED %s version %d", e, first.PeerID(), snapshot.Version+1)
	}
	if e := nextEvent(t, sessionEvents); e.Kind != switchboard.PresenceSnapshot {
		t.Fatalf("the session's first event %+v", e)
	}

	second, err := client.Respond(within(t, 10*time.Second), channel, echo)
	if err != nil {
		t.Fatal(err)
	}
	joined := nextEvent(t, watched)
	if joined.Kind != switchboard.PresenceJoined || joined.Peers[0] != second.PeerID() {
		t.Fatalf("event %+v, want JOINED %s", joined, second.PeerID())
	}
	if e := nextEvent(t, sessionEvents); e.Kind != switchboard.PresenceJoined || e.Version != joined.Version {
		t.Fatalf("the session saw %+v, the watch %+v", e, joined)
	}
	peers, version, err := client.ListPeers(within(t, 10*time.Second), channel)
	sort.Strings(peers)
	want := []string{first.PeerID(), second.PeerID()}
	sort.Strings(want)
	if err != nil || fmt.Sprint(peers) != fmt.Sprint(want) || version != joined.Version {
		t.Fatalf("ListPeers: %v version %d (%v), want %v version %d", peers, version, err, want, joined.Version)
	}
	if others, _ := first.Peers(); fmt.Sprint(others) != fmt.Sprint([]string{second.PeerID()}) {
		t.Fatalf("the first session's peers %v", others)
	}

	second.Close()
	if e := nextEvent(t, watched); e.Kind != switchboard.PresenceLeft || e.Peers[0] != second.PeerID() || e.Version != joined.Version+1 {
		t.Fatalf("event %+v, want LEFT %s", e, second.PeerID())
	}
	if e := nextEvent(t, sessionEvents); e.Kind != switchboard.PresenceLeft {
		t.Fatalf("the session saw %+v", e)
	}

	stopWatch()
	for range watched { // closed, without an error event, once its context ends
	}
}

func TestNoResponders(t *testing.T) {
	client := dial(t)
	response, err := client.Send(within(t, 10*time.Second), switchboard.NewID(), strings.NewReader("anyone?"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(response)
	wantStatus(t, err, switchboard.ErrNoResponders, codes.Unavailable)
	if response.Close() == nil {
		t.Fatal("Close returned nil after a failed response")
	}
	// An absent target on a channel with a responder.
	channel := switchboard.NewID()
	respond(t, client, channel, echo)
	response, err = client.Send(within(t, 10*time.Second), channel, nil, switchboard.ToPeer(switchboard.NewID()))
	if err == nil {
		_, err = io.ReadAll(response)
	}
	wantStatus(t, err, switchboard.ErrNoResponders, codes.Unavailable)
}

func TestHandlerErrors(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	respond(t, client, channel, func(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
		body, _ := io.ReadAll(req.Body)
		switch string(body) {
		case "app":
			return switchboard.ApplicationError(7, "refused by the application")
		case "fail":
			io.WriteString(w, "partial ")
			return w.Fail(9, "failed midway")
		case "panic":
			panic("boom")
		default:
			return errors.New("plain error")
		}
	})
	cases := []struct {
		body    string
		code    uint32
		message string
	}{
		{"app", 7, "refused by the application"},
		{"fail", 9, "failed midway"},
		{"panic", 1, "handler panicked: boom"},
		{"other", 1, "plain error"},
	}
	for _, c := range cases {
		response, err := client.Send(within(t, 10*time.Second), channel, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(response)
		e := wantStatus(t, err, switchboard.ErrApplication, codes.Unknown)
		if e.AppCode != c.code || e.Message != c.message {
			t.Fatalf("%s: app code %d message %q, want %d %q", c.body, e.AppCode, e.Message, c.code, c.message)
		}
	}
}

// Cancelling a Send's context mid-response ends it on both sides; a deadline that passes and an
// idle timeout end the stream with their statuses.
func TestCancellationAndTimeouts(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	handlerEnded := make(chan error, 4)
	respond(t, client, channel, func(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
		io.ReadAll(req.Body)
		if req.Metadata["mode"] == "stream" {
			for i := 0; i < 10000; i++ { // until the stream ends (bounded)
				if _, err := w.Write(make([]byte, 64*1024)); err != nil {
					handlerEnded <- err
					return err
				}
			}
			handlerEnded <- nil
			return nil
		}
		<-ctx.Done() // never answers
		handlerEnded <- ctx.Err()
		return nil
	})

	ctx, cancel := context.WithCancel(within(t, 30*time.Second))
	response, err := client.Send(ctx, channel, nil, switchboard.WithMetadata(map[string]string{"mode": "stream"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(response, make([]byte, mib)); err != nil {
		t.Fatalf("the response did not start: %v", err)
	}
	cancel()
	_, err = io.Copy(io.Discard, response)
	wantStatus(t, err, switchboard.ErrCancelled, codes.Canceled)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v does not match context.Canceled", err)
	}
	select {
	case err := <-handlerEnded:
		if !errors.Is(err, switchboard.ErrCancelled) && !errors.Is(err, switchboard.ErrPeerGone) {
			t.Fatalf("the handler's write ended with %v, want the stream reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's writes did not end after the cancel")
	}

	deadlineCtx, cancelDeadline := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancelDeadline()
	response, err = client.Send(deadlineCtx, channel, strings.NewReader("wait"))
	if err == nil {
		_, err = io.ReadAll(response)
	}
	wantStatus(t, err, switchboard.ErrDeadlineExceeded, codes.DeadlineExceeded)
	select {
	case err := <-handlerEnded:
		if err == nil {
			t.Fatal("the handler's context did not end")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context did not end after the deadline")
	}

	response, err = client.Send(within(t, 20*time.Second), channel, strings.NewReader("idle"),
		switchboard.WithIdleTimeout(300*time.Millisecond))
	if err == nil {
		_, err = io.ReadAll(response)
	}
	wantStatus(t, err, switchboard.ErrIdleTimeout, codes.DeadlineExceeded)
}

func TestPeerGone(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	started := make(chan struct{}, 1)
	responder := respond(t, client, channel, func(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
		started <- struct{}{}
		<-ctx.Done()
		return nil
	})
	response, err := client.Send(within(t, 20*time.Second), channel, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(response)
		failed <- err
	}()
	await(t, started, "the request at the responder")
	responder.Close()
	wantStatus(t, await(t, failed, "the Send to end"), switchboard.ErrPeerGone, codes.Unavailable)
	if responder.Err() != nil {
		t.Fatalf("Err after Close: %v", responder.Err())
	}
}

func TestRefusedAndBadInput(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	first := respond(t, client, channel, echo)
	_, err := client.Respond(within(t, 10*time.Second), channel, echo, switchboard.WithPeerID(first.PeerID()))
	wantStatus(t, err, switchboard.ErrRefused, codes.AlreadyExists)

	_, err = client.WatchPeers(within(t, 10*time.Second), "not-a-uuid")
	wantStatus(t, err, switchboard.ErrProtocolError, codes.InvalidArgument)
	_, _, err = client.ListPeers(within(t, 10*time.Second), "")
	wantStatus(t, err, switchboard.ErrProtocolError, codes.InvalidArgument)
	_, err = client.Broadcast(within(t, 10*time.Second), "nope", strings.NewReader("x"))
	wantStatus(t, err, switchboard.ErrProtocolError, codes.InvalidArgument)
}

// A relay that crashes ends WatchPeers with a final event carrying the error, and a Respond
// session with Err set.
func TestRelayGone(t *testing.T) {
	own, err := startRelay(*serverBinary)
	if err != nil {
		t.Fatal(err)
	}
	defer own.stop()
	client, err := switchboard.Dial(within(t, 10*time.Second), own.grpc)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	channel := switchboard.NewID()
	watched, err := client.WatchPeers(context.Background(), channel)
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, watched)
	responder, err := client.Respond(within(t, 10*time.Second), channel, echo)
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, watched) // its join
	own.crash()
	select {
	case <-responder.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the Respond session did not end with the relay")
	}
	if responder.Err() == nil {
		t.Fatal("Err is nil after the relay went away")
	}
	var last switchboard.PresenceEvent
	for event := range watched { // bounded: the relay is gone
		last = event
	}
	if last.Err == nil {
		t.Fatalf("the watch ended without an error event (last %+v)", last)
	}
}

// The README's example program runs against the relay and prints what it says it does.
func TestExample(t *testing.T) {
	if *exampleBinary == "" {
		t.Skip("no -example binary given")
	}
	ctx := within(t, 60*time.Second)
	out, err := exec.CommandContext(ctx, *exampleBinary, "-server", theRelay.grpc).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", *exampleBinary, err, out)
	}
	for _, want := range []string{
		"response: hello, switchboard",
		`broadcast received: "to everyone"`,
		"broadcast: delivered=1 dropped=0",
		"empty channel: no responders",
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("the example printed no %q:\n%s", want, out)
		}
	}
}

// Without stream windows (the relay's older, session-wide flow control) the client still
// streams: an 8 MiB echo, beyond the 4 MiB it buffers per request.
func TestWithoutStreamWindows(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	responder := respond(t, client, channel, echo, switchboard.WithoutStreamWindows())
	if responder.StreamWindows() {
		t.Fatal("the relay granted stream windows that were not asked for")
	}
	const size = 8 * mib
	response, err := client.Send(within(t, 60*time.Second), channel, patterned(4, size))
	if err != nil {
		t.Fatal(err)
	}
	n, sum, err := digest(response)
	_, want, _ := digest(patterned(4, size))
	if err != nil || n != size || sum != want {
		t.Fatalf("echo: %d bytes, %v, sha256 match %v", n, err, sum == want)
	}
}

type failingReader struct{ sent bool }

func (f *failingReader) Read(p []byte) (int, error) {
	if !f.sent {
		f.sent = true
		return copy(p, "partial"), nil
	}
	return 0, errors.New("disk on fire")
}

// Close aborts a Read in progress; a request body that fails to read cancels the stream and is
// what the response's Read returns.
func TestCloseAndBodyErrors(t *testing.T) {
	client := dial(t)
	channel := switchboard.NewID()
	started, handlerEnded := make(chan struct{}, 2), make(chan struct{}, 2)
	respond(t, client, channel, func(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
		started <- struct{}{}
		io.Copy(io.Discard, req.Body)
		<-ctx.Done() // never answers
		handlerEnded <- struct{}{}
		return nil
	})
	response, err := client.Send(within(t, 20*time.Second), channel, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(response)
		readErr <- err
	}()
	await(t, started, "the request at the responder")
	response.Close()
	wantStatus(t, await(t, readErr, "the Read to end after Close"), switchboard.ErrCancelled, codes.Canceled)
	await(t, handlerEnded, "the handler's context to end after Close")

	response, err = client.Send(within(t, 20*time.Second), channel, &failingReader{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(response)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Read after a failing body: %v", err)
	}
}
