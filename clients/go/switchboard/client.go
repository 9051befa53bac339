// Package switchboard is a Go client of the Switchboard relay's gRPC door
// (proto/switchboard/v1/switchboard.proto, docs/GATEWAY.md).
//
// A Client is one gRPC connection. On it:
//
//   - Send streams one request to a peer of a channel and streams its response back;
//   - Broadcast streams one message to every other peer of a channel and returns the summary;
//   - Respond joins a channel as a peer that serves requests, one Handler goroutine per
//     request, each with its own flow-control credit;
//   - ListPeers and WatchPeers show a channel's membership without joining it.
//
// Pointed at any relay of a cluster, a Client makes each channel's calls on the relay that
// serves that channel (Locate, WithLocate).
//
// Every call takes a context.Context: its deadline is the stream's deadline and cancelling it
// cancels the stream at the other side. Failures are *Error values carrying the Switchboard
// Status; compare them with errors.Is against ErrNoResponders, ErrPeerGone, and so on.
package switchboard

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	pb "switchboard.dev/client/internal/switchboardpb"
)

// DefaultTarget is the relay's default gRPC address.
const DefaultTarget = "127.0.0.1:7401"

// ChunkSize is the most body bytes this package puts in one gRPC message.
const ChunkSize = 64 * 1024

// maxMessage bounds one received gRPC message (the relay sends at most 4 MiB).
const maxMessage = 64 * 1024 * 1024

// Client is a connection to a relay's gRPC door. It is safe for concurrent use; Close ends it.
type Client struct {
	conn  *grpc.ClientConn
	stub  pb.SwitchboardServiceClient
	token string
	// home makes every call on the relay Dial was given (locating off).
	home         *route
	locating     bool
	relayOptions []grpc.DialOption // the dial options less WithBlock, for the other relays

	mu     sync.Mutex
	closed bool
	routes map[string]*route           // by channel: where its calls go
	relays map[string]*grpc.ClientConn // by gRPC address: the other relays of a cluster
}

type dialConfig struct {
	tls      *tls.Config
	token    string
	block    bool
	noLocate bool
	extra    []grpc.DialOption
}

// DialOption configures Dial.
type DialOption func(*dialConfig)

// WithTLS connects over TLS with config (nil: the system roots and the target's host name).
func WithTLS(config *tls.Config) DialOption {
	return func(c *dialConfig) {
		if config == nil {
			config = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		c.tls = config
	}
}

// WithToken sends token (a signed JWT, docs/SECURITY.md) with every call, for a relay run with
// --auth-mode required.
func WithToken(token string) DialOption {
	return func(c *dialConfig) { c.token = token }
}

// WithBlock makes Dial wait, within its context, until the connection is up.
func WithBlock() DialOption {
	return func(c *dialConfig) { c.block = true }
}

// WithGRPCDialOptions adds options to the underlying grpc.DialContext.
func WithGRPCDialOptions(options ...grpc.DialOption) DialOption {
	return func(c *dialConfig) { c.extra = append(c.extra, options...) }
}

// Dial opens a Client to the relay's gRPC door at target ("host:port"). Without WithBlock it
// returns at once and connects on first use; ctx bounds only a blocking dial.
func Dial(ctx context.Context, target string, options ...DialOption) (*Client, error) {
	var config dialConfig
	for _, option := range options {
		option(&config)
	}
	grpcOptions := []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage))}
	if config.tls != nil {
		grpcOptions = append(grpcOptions, grpc.WithTransportCredentials(credentials.NewTLS(config.tls)))
	} else {
		grpcOptions = append(grpcOptions, grpc.WithInsecure())
	}
	relayOptions := append(append([]grpc.DialOption{}, grpcOptions...), config.extra...)
	if config.block {
		grpcOptions = append(grpcOptions, grpc.WithBlock())
	}
	grpcOptions = append(grpcOptions, config.extra...)
	conn, err := grpc.DialContext(ctx, target, grpcOptions...)
	if err != nil {
		return nil, callError(ctx, err, nil)
	}
	stub := pb.NewSwitchboardServiceClient(conn)
	ready := make(chan struct{})
	close(ready)
	return &Client{
		conn:         conn,
		stub:         stub,
		token:        config.token,
		home:         &route{ready: ready, stub: stub},
		locating:     !config.noLocate,
		relayOptions: relayOptions,
		routes:       make(map[string]*route),
		relays:       make(map[string]*grpc.ClientConn),
	}, nil
}

// Close ends the connections (to the relay Dial was given and to the other relays of a
// cluster it opened) and every call still open on them.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	relays := c.relays
	c.relays = map[string]*grpc.ClientConn{}
	c.routes = map[string]*route{}
	c.mu.Unlock()
	for _, conn := range relays {
		_ = conn.Close()
	}
	return c.conn.Close()
}

type callConfig struct {
	target      string
	metadata    map[string]string
	idleTimeout time.Duration
	asPeer      string
}

// CallOption configures Send and Broadcast.
type CallOption func(*callConfig)

// ToPeer sends to the peer with this id instead of any peer that serves requests (Send only).
func ToPeer(peerID string) CallOption {
	return func(c *callConfig) { c.target = peerID }
}

// WithMetadata attaches headers the receivers see (at most 64 entries, about 1 KB in all).
func WithMetadata(metadata map[string]string) CallOption {
	return func(c *callConfig) { c.metadata = metadata }
}

// WithIdleTimeout ends the stream with StatusIdleTimeout when no byte moves on it for d
// (0: the relay's default). The relay counts whole milliseconds.
func WithIdleTimeout(d time.Duration) CallOption {
	return func(c *callConfig) { c.idleTimeout = d }
}

// AsPeer makes the call speak for peerID, a Respond peer of the channel joined on this same
// Client (or the token's peer): receivers see it as the sender, and a broadcast skips it.
func AsPeer(peerID string) CallOption {
	return func(c *callConfig) { c.asPeer = peerID }
}

func collect(options []CallOption) callConfig {
	var config callConfig
	for _, option := range options {
		option(&config)
	}
	return config
}

func millis(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(ms)
}

// ---- Send ----

// Send streams body (read until io.EOF) as one request on channel and returns its response as
// it arrives. The response's Read returns io.EOF once it ended with StatusOK, or an *Error
// with its status (NO_RESPONDERS, APPLICATION, ...); Close abandons a response not read to its
// end. ctx is the stream's deadline and cancelling it cancels the stream at the responder.
// A body Read error cancels the stream and is returned by the response's Read. Read the
// response to its end or Close it: until then the stream (and the goroutine sending the body)
// stays open.
func (c *Client) Send(ctx context.Context, channel string, body io.Reader, options ...CallOption) (io.ReadCloser, error) {
	config := collect(options)
	route, err := c.routeTo(ctx, channel)
	if err != nil {
		return nil, err
	}
	callCtx, cancel := context.WithCancel(ctx)
	stream, err := route.stub.Send(callCtx)
	if err != nil {
		cancel()
		err = callError(ctx, err, nil)
		c.forget(channel, route, err)
		return nil, err
	}
	response := &responseReader{ctx: ctx, cancel: cancel, stream: stream, writerDone: make(chan struct{}),
		onEnd:    func(err error) { c.forget(channel, route, err) },
		onHeader: func(header metadata.MD) { c.learn(channel, route, header) }}
	open := &pb.SendOpen{
		Channel:       channel,
		Target:        config.target,
		IdleTimeoutMs: millis(config.idleTimeout),
		Metadata:      config.metadata,
		SenderPeerId:  config.asPeer,
		Token:         c.token,
	}
	go response.write(open, body)
	return response, nil
}

type responseReader struct {
	ctx        context.Context
	cancel     context.CancelFunc
	stream     pb.SwitchboardService_SendClient
	pending    []byte
	mu         sync.Mutex // guards final: Close may run beside a Read
	final      error      // io.EOF or the *Error the stream ended with
	writerDone chan struct{}
	bodyErr    error             // set by write before writerDone closes
	onEnd      func(error)       // told the error the stream ended with
	onHeader   func(metadata.MD) // told the initial metadata once, then nil
}

func (r *responseReader) write(open *pb.SendOpen, body io.Reader) {
	defer close(r.writerDone)
	if err := r.stream.Send(&pb.SendRequest{Kind: &pb.SendRequest_Open{Open: open}}); err != nil {
		return // the stream ended; Recv reports how
	}
	if body != nil {
		buffer := make([]byte, ChunkSize)
		for {
			n, err := body.Read(buffer)
			if n > 0 {
				// Send serializes the message before it returns: the buffer may be reused.
				chunk := &pb.SendRequest{Kind: &pb.SendRequest_Chunk{Chunk: &pb.Chunk{Data: buffer[:n]}}}
				if r.stream.Send(chunk) != nil {
					return
				}
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				r.bodyErr = fmt.Errorf("switchboard: reading the request body: %w", err)
				r.cancel()
				return
			}
		}
	}
	_ = r.stream.CloseSend()
}

// Read returns response bytes as they arrive; io.EOF after an OK end, else the *Error.
func (r *responseReader) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		if final := r.ended(); final != nil {
			return 0, final
		}
		message, err := r.stream.Recv()
		if r.onHeader != nil {
			// Recv returned: the initial metadata (if any) is in, Header does not block.
			if header, headerErr := r.stream.Header(); headerErr == nil {
				r.onHeader(header)
			}
			r.onHeader = nil
		}
		if err != nil {
			r.finish(err)
			continue
		}
		if chunk := message.GetChunk(); chunk != nil {
			r.pending = chunk.Data
		}
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

func (r *responseReader) ended() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.final
}

func (r *responseReader) finish(err error) {
	defer r.cancel()
	final := io.EOF
	if !errors.Is(err, io.EOF) {
		final = callError(r.ctx, err, r.stream.Trailer())
		// A body that failed to read cancelled the stream: that, not CANCELLED, is the reason.
		select {
		case <-r.writerDone:
			if r.bodyErr != nil {
				final = r.bodyErr
			}
		default:
		}
	}
	r.mu.Lock()
	r.final = final
	r.mu.Unlock()
	if final != io.EOF {
		r.onEnd(final)
	}
}

// Close cancels the stream if its response was not read to its end (a Read in progress then
// returns); it returns the stream's error if it already ended with one.
func (r *responseReader) Close() error {
	r.cancel()
	if final := r.ended(); final != nil && !errors.Is(final, io.EOF) {
		return final
	}
	return nil
}

// ---- Broadcast ----

// Summary is what a broadcast reached.
type Summary struct {
	// Delivered counts the receivers that got the whole message.
	Delivered uint32
	// Dropped counts the receivers dropped (slow, gone, or left the broadcast).
	Dropped uint32
}

// Broadcast streams body (read until io.EOF) to every other peer of channel and returns the
// relay's summary once all of them have it or were dropped. ToPeer is not allowed.
func (c *Client) Broadcast(ctx context.Context, channel string, body io.Reader, options ...CallOption) (Summary, error) {
	config := collect(options)
	if config.target != "" {
		return Summary{}, errors.New("switchboard: Broadcast takes no ToPeer option")
	}
	route, err := c.routeTo(ctx, channel)
	if err != nil {
		return Summary{}, err
	}
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := route.stub.Broadcast(callCtx)
	if err != nil {
		err = callError(ctx, err, nil)
		c.forget(channel, route, err)
		return Summary{}, err
	}
	open := &pb.BroadcastOpen{
		Channel:       channel,
		Metadata:      config.metadata,
		SenderPeerId:  config.asPeer,
		Token:         c.token,
		IdleTimeoutMs: millis(config.idleTimeout),
	}
	if err := c.broadcastBody(stream, open, body); err != nil {
		return Summary{}, err
	}
	var summary *pb.BroadcastSummary
	for first := true; ; first = false {
		message, err := stream.Recv()
		if first {
			if header, headerErr := stream.Header(); headerErr == nil {
				c.learn(channel, route, header)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			err = callError(ctx, err, stream.Trailer())
			c.forget(channel, route, err)
			return Summary{}, err
		}
		if message.Summary != nil {
			summary = message.Summary
		}
	}
	if summary == nil {
		return Summary{}, &Error{Status: StatusInternal, Message: "the broadcast ended OK without a summary"}
	}
	return Summary{Delivered: summary.Delivered, Dropped: summary.Dropped}, nil
}

// broadcastBody sends the open, the body and the half-close; an error only for a body that
// failed to read (a stream that ended early says why on Recv).
func (c *Client) broadcastBody(stream pb.SwitchboardService_BroadcastClient, open *pb.BroadcastOpen, body io.Reader) error {
	if stream.Send(&pb.BroadcastRequest{Kind: &pb.BroadcastRequest_Open{Open: open}}) != nil {
		return nil
	}
	if body != nil {
		buffer := make([]byte, ChunkSize)
		for {
			n, err := body.Read(buffer)
			if n > 0 {
				chunk := &pb.BroadcastRequest{Kind: &pb.BroadcastRequest_Chunk{Chunk: &pb.Chunk{Data: buffer[:n]}}}
				if stream.Send(chunk) != nil {
					return nil
				}
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("switchboard: reading the broadcast body: %w", err)
			}
		}
	}
	_ = stream.CloseSend()
	return nil
}

// ---- Presence without joining ----

// PresenceKind says what a PresenceEvent is.
type PresenceKind int

// The kinds of presence events.
const (
	// PresenceSnapshot: Peers is the whole membership (always the first event).
	PresenceSnapshot PresenceKind = iota + 1
	// PresenceJoined: Peers holds the one peer that joined.
	PresenceJoined
	// PresenceLeft: Peers holds the one peer that left.
	PresenceLeft
)

// String returns "SNAPSHOT", "JOINED" or "LEFT".
func (k PresenceKind) String() string {
	switch k {
	case PresenceSnapshot:
		return "SNAPSHOT"
	case PresenceJoined:
		return "JOINED"
	case PresenceLeft:
		return "LEFT"
	}
	return "UNKNOWN"
}

// PresenceEvent is one change of a channel's membership.
type PresenceEvent struct {
	// Kind says whether Peers is the whole membership or one peer that joined or left.
	Kind PresenceKind
	// Peers are peer ids.
	Peers []string
	// Version is the channel's membership version after this event (+1 per change): a gap
	// means missed events.
	Version uint64
	// Err is set only on the last event a WatchPeers channel carries when the watch failed
	// (Kind is then 0); a watch ended by its context ends without it.
	Err error
}

func presenceFromProto(update *pb.PresenceUpdate) PresenceEvent {
	event := PresenceEvent{Peers: update.GetPeers(), Version: update.GetVersion()}
	switch update.GetKind() {
	case pb.PresenceUpdate_KIND_SNAPSHOT:
		event.Kind = PresenceSnapshot
	case pb.PresenceUpdate_KIND_JOINED:
		event.Kind = PresenceJoined
	case pb.PresenceUpdate_KIND_LEFT:
		event.Kind = PresenceLeft
	}
	return event
}

// ListPeers returns the members of channel now and the membership version, without joining.
// When the channel moved, it is located again and asked once more.
func (c *Client) ListPeers(ctx context.Context, channel string) ([]string, uint64, error) {
	for attempt := 0; ; attempt++ {
		route, err := c.routeTo(ctx, channel)
		if err != nil {
			return nil, 0, err
		}
		var header, trailer metadata.MD
		answer, err := route.stub.ListPeers(ctx, &pb.ListPeersRequest{Channel: channel, Token: c.token},
			grpc.Header(&header), grpc.Trailer(&trailer))
		c.learn(channel, route, header)
		if err == nil {
			return answer.Peers, answer.Version, nil
		}
		err = callError(ctx, err, trailer)
		if !c.forget(channel, route, err) || attempt > 0 {
			return nil, 0, err
		}
	}
}

// WatchPeers returns the membership of channel as a snapshot event, then one event per join
// and leave, without joining. It returns once the snapshot has arrived (or with the error that
// prevented it). The channel is closed when ctx ends or the watch fails; in the second case
// its last event carries the error in Err. When the channel moved before the snapshot, it is
// located again and watched once more.
func (c *Client) WatchPeers(ctx context.Context, channel string) (<-chan PresenceEvent, error) {
	for attempt := 0; ; attempt++ {
		route, err := c.routeTo(ctx, channel)
		if err != nil {
			return nil, err
		}
		events, err := c.watchPeers(ctx, channel, route)
		if err == nil || !c.forget(channel, route, err) || attempt > 0 {
			return events, err
		}
	}
}

func (c *Client) watchPeers(ctx context.Context, channel string, route *route) (<-chan PresenceEvent, error) {
	callCtx, cancel := context.WithCancel(ctx)
	stream, err := route.stub.WatchPeers(callCtx, &pb.WatchPeersRequest{Channel: channel, Token: c.token})
	if err != nil {
		cancel()
		return nil, callError(ctx, err, nil)
	}
	first, err := stream.Recv()
	if header, headerErr := stream.Header(); headerErr == nil {
		c.learn(channel, route, header)
	}
	if err != nil {
		cancel()
		if errors.Is(err, io.EOF) {
			return nil, &Error{Status: StatusInternal, Message: "the watch ended before its snapshot"}
		}
		return nil, callError(ctx, err, stream.Trailer())
	}
	events := make(chan PresenceEvent, 16)
	go func() {
		defer cancel()
		defer close(events)
		update := first.GetUpdate()
		for {
			select {
			case events <- presenceFromProto(update):
			case <-ctx.Done():
				return
			}
			next, err := stream.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if errors.Is(err, io.EOF) {
					err = &Error{Status: StatusInternal, Message: "the relay ended the watch"}
				} else {
					err = callError(ctx, err, stream.Trailer())
					c.forget(channel, route, err)
				}
				select {
				case events <- PresenceEvent{Err: err}:
				case <-ctx.Done():
				}
				return
			}
			update = next.GetUpdate()
		}
	}()
	return events, nil
}

// NewID returns a random UUID (version 4) in its 36-character text form: a new channel or
// peer id.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("switchboard: no randomness: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
