package switchboard

// Respond: a peer that serves requests, with one handler goroutine and its own credit per
// incoming stream.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	pb "switchboard.dev/client/internal/switchboardpb"
)

// incomingBuffer bounds the body bytes buffered per incoming stream when the relay grants no
// stream windows (with windows, the relay's own window bounds it).
const incomingBuffer = 4 * 1024 * 1024

// outgoingQueue is how many messages towards the relay a Respond session queues before the
// handlers that write them wait.
const outgoingQueue = 64

// Request is one incoming request (or broadcast) of a Respond session.
type Request struct {
	// ID is the stream's id within its Respond session.
	ID uint64
	// Sender is the sending peer's id; empty for an anonymous gRPC sender.
	Sender string
	// Metadata are the headers the sender attached.
	Metadata map[string]string
	// Body streams the request body: io.EOF at its end, an *Error if the stream was reset
	// (cancelled, deadline, sender gone). Reading it returns credit to the sender.
	Body io.Reader
	// Deadline is when the stream's deadline passes; zero without one. The handler's context
	// carries it too.
	Deadline time.Time
	// Broadcast is true for a broadcast (given to the BroadcastHandler, which sends no reply).
	Broadcast bool
}

// ResponseWriter streams a request's response. Write sends bytes as the requester's credit
// allows (it waits for credit, not for other requests); a nil return from the Handler then
// ends the response with StatusOK.
type ResponseWriter interface {
	io.Writer
	// Fail ends the response with StatusApplication, code and message, which reach the sender
	// unchanged (as returning ApplicationError(code, message) from the Handler does).
	Fail(code uint32, message string) error
}

// Handler serves one request, on a goroutine of its own. Its context ends when the stream is
// reset or the session ends, and carries the request's deadline. It returns nil to end the
// response with StatusOK, an *Error (e.g. from ApplicationError) to end it with that status,
// or another error to end it with StatusApplication, code 1 and the error's text.
type Handler func(ctx context.Context, req *Request, w ResponseWriter) error

// BroadcastHandler receives one broadcast, on a goroutine of its own; an error leaves the
// broadcast (the sender counts this peer as dropped).
type BroadcastHandler func(ctx context.Context, msg *Request) error

type respondConfig struct {
	peerID      string
	onPresence  func(PresenceEvent)
	onBroadcast BroadcastHandler
	noWindows   bool
}

// RespondOption configures Respond.
type RespondOption func(*respondConfig)

// WithPeerID joins under this peer id (a UUID) instead of one the relay assigns, to keep an
// identity across reconnects.
func WithPeerID(peerID string) RespondOption {
	return func(c *respondConfig) { c.peerID = peerID }
}

// OnPresence calls f with every presence event of the channel (the snapshot first), in order,
// on one goroutine.
func OnPresence(f func(PresenceEvent)) RespondOption {
	return func(c *respondConfig) { c.onPresence = f }
}

// OnBroadcast receives the channel's broadcasts (without it, they are read and dropped).
func OnBroadcast(h BroadcastHandler) RespondOption {
	return func(c *respondConfig) { c.onBroadcast = h }
}

// WithoutStreamWindows asks the relay for no per-stream credit: a requester that stops reading
// its response then delays every response of this peer. For comparison and older relays.
func WithoutStreamWindows() RespondOption {
	return func(c *respondConfig) { c.noWindows = true }
}

// Responder is a Respond session: one peer on one channel, serving requests until its
// context ends, Close is called, or the relay ends it.
type Responder struct {
	stream     pb.SwitchboardService_RespondClient
	ctx        context.Context
	cancel     context.CancelFunc
	handler    Handler
	onBcast    BroadcastHandler
	out        chan *pb.RespondRequest
	done       chan struct{} // closed when the reader has ended (the session is over)
	writerDone chan struct{}
	ready      chan struct{} // closed at the first snapshot or when the session ends
	handlers   sync.WaitGroup
	events     *eventQueue
	ended      func(error) // told why the relay ended the session

	mu             sync.Mutex
	streams        map[uint64]*incoming
	peerID         string
	peers          map[string]struct{}
	version        uint64
	windows        bool
	responseWindow uint32
	incomingWindow uint32
	err            error
	readyOnce      sync.Once
}

// Respond joins channel as a peer that serves requests with handler and returns once the
// relay has answered the join and sent the membership snapshot. The session ends when ctx
// ends, Close is called or the relay ends it (see Done and Err). When the channel moved before
// the join was answered, it is located again and joined once more.
func (c *Client) Respond(ctx context.Context, channel string, handler Handler, options ...RespondOption) (*Responder, error) {
	var config respondConfig
	for _, option := range options {
		option(&config)
	}
	for attempt := 0; ; attempt++ {
		route, err := c.routeTo(ctx, channel)
		if err != nil {
			return nil, err
		}
		r, err := c.respond(ctx, channel, route, handler, config)
		if err == nil || !c.forget(channel, route, err) || attempt > 0 {
			return r, err
		}
	}
}

func (c *Client) respond(ctx context.Context, channel string, route *route, handler Handler, config respondConfig) (*Responder, error) {
	sessionCtx, cancel := context.WithCancel(ctx)
	stream, err := route.stub.Respond(sessionCtx)
	if err != nil {
		cancel()
		return nil, callError(ctx, err, nil)
	}
	r := &Responder{
		ended:      func(err error) { c.forget(channel, route, err) },
		stream:     stream,
		ctx:        sessionCtx,
		cancel:     cancel,
		handler:    handler,
		onBcast:    config.onBroadcast,
		out:        make(chan *pb.RespondRequest, outgoingQueue),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
		ready:      make(chan struct{}),
		streams:    make(map[uint64]*incoming),
		peers:      make(map[string]struct{}),
		events:     newEventQueue(config.onPresence),
	}
	join := &pb.Join{Channel: channel, PeerId: config.peerID, Token: c.token, StreamWindows: !config.noWindows}
	if err := stream.Send(&pb.RespondRequest{Kind: &pb.RespondRequest_Join{Join: join}}); err != nil {
		// The stream already ended: the reader learns why.
		close(r.writerDone)
	} else {
		go r.writeLoop()
	}
	go r.readLoop(ctx)
	select {
	case <-r.ready:
	case <-ctx.Done():
		r.Close()
		return nil, callError(ctx, ctx.Err(), nil)
	}
	select {
	case <-r.done:
		r.Close()
		return nil, r.Err()
	default:
	}
	// The join was answered: the initial metadata is in, Header does not block.
	if header, err := stream.Header(); err == nil {
		c.learn(channel, route, header)
	}
	return r, nil
}

// PeerID returns this peer's id.
func (r *Responder) PeerID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peerID
}

// Peers returns the other peers of the channel now, sorted, and the membership version.
func (r *Responder) Peers() ([]string, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	peers := make([]string, 0, len(r.peers))
	for peer := range r.peers {
		peers = append(peers, peer)
	}
	sort.Strings(peers)
	return peers, r.version
}

// StreamWindows reports whether the relay granted per-stream credit (see WithoutStreamWindows).
func (r *Responder) StreamWindows() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.windows
}

// Done is closed when the session has ended.
func (r *Responder) Done() <-chan struct{} { return r.done }

// Err returns why the session ended: nil while it runs or after Close or the end of its
// context, else the *Error the relay ended it with.
func (r *Responder) Err() error {
	select {
	case <-r.done:
	default:
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close leaves the channel at once: requests still open end with PEER_GONE at their senders
// and the handlers' contexts end. It waits for the session's own goroutines, not the handlers.
func (r *Responder) Close() error {
	r.cancel()
	<-r.done
	<-r.writerDone
	r.events.close()
	return nil
}

// Shutdown waits for the handlers in flight to return (bounded by ctx), then closes.
func (r *Responder) Shutdown(ctx context.Context) error {
	finished := make(chan struct{})
	go func() {
		r.handlers.Wait()
		close(finished)
	}()
	var err error
	select {
	case <-finished:
	case <-ctx.Done():
		err = ctx.Err()
	}
	r.Close()
	return err
}

func (r *Responder) writeLoop() {
	defer close(r.writerDone)
	for {
		select {
		case message := <-r.out:
			if r.stream.Send(message) != nil {
				return // the stream ended: the reader learns why and ends the session
			}
		case <-r.ctx.Done():
			return
		}
	}
}

// enqueue queues a message towards the relay; false when the session or (non-nil) abandon
// ended first.
func (r *Responder) enqueue(message *pb.RespondRequest, abandon <-chan struct{}) bool {
	select {
	case r.out <- message:
		return true
	case <-r.ctx.Done():
		return false
	case <-abandon:
		return false
	}
}

// grant returns n bytes of credit of incoming stream id to its sender (with windows).
func (r *Responder) grant(id uint64, n int) {
	if n <= 0 || !r.windows {
		return
	}
	for n > 0 {
		piece := n
		if piece > 1<<31 {
			piece = 1 << 31
		}
		n -= piece
		r.enqueue(&pb.RespondRequest{Kind: &pb.RespondRequest_Window{
			Window: &pb.StreamWindow{Id: id, Bytes: uint32(piece)}}}, nil)
	}
}

func (r *Responder) readLoop(parent context.Context) {
	var ended error
	defer func() {
		r.mu.Lock()
		byRelay := r.ctx.Err() == nil // not ended by Close or the session's context
		if byRelay {
			r.err = ended
		}
		streams := r.streams
		r.streams = map[uint64]*incoming{}
		r.mu.Unlock()
		r.cancel()
		for _, in := range streams {
			in.resetWith(&Error{Status: StatusPeerGone, Message: "the Respond session ended", Code: codes.Unknown})
		}
		if byRelay {
			r.ended(ended)
		}
		close(r.done)
		r.readyOnce.Do(func() { close(r.ready) })
	}()
	for {
		message, err := r.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				ended = &Error{Status: StatusPeerGone, Message: "the relay ended the Respond session", Code: codes.OK}
			} else {
				ended = callError(parent, err, r.stream.Trailer())
			}
			return
		}
		switch kind := message.Kind.(type) {
		case *pb.RespondResponse_Joined:
			r.mu.Lock()
			r.peerID = kind.Joined.PeerId
			r.responseWindow = kind.Joined.ResponseWindow
			r.incomingWindow = kind.Joined.IncomingWindow
			r.windows = r.responseWindow > 0
			r.mu.Unlock()
		case *pb.RespondResponse_Presence:
			r.presence(presenceFromProto(kind.Presence))
		case *pb.RespondResponse_Start:
			r.start(kind.Start)
		case *pb.RespondResponse_Chunk:
			r.mu.Lock()
			in := r.streams[kind.Chunk.Id]
			r.mu.Unlock()
			if in == nil {
				r.grant(kind.Chunk.Id, len(kind.Chunk.Data))
			} else {
				in.feed(kind.Chunk.Data, kind.Chunk.Last)
			}
		case *pb.RespondResponse_Window:
			r.mu.Lock()
			in := r.streams[kind.Window.Id]
			r.mu.Unlock()
			if in != nil {
				in.addCredit(int64(kind.Window.Bytes))
			}
		case *pb.RespondResponse_Reset_:
			r.mu.Lock()
			in := r.streams[kind.Reset_.Id]
			delete(r.streams, kind.Reset_.Id)
			r.mu.Unlock()
			if in != nil {
				in.resetWith(&Error{Status: statusFromProto(kind.Reset_.Status), Message: kind.Reset_.Message, Code: codes.Unknown})
			}
		}
	}
}

func (r *Responder) presence(event PresenceEvent) {
	r.mu.Lock()
	switch event.Kind {
	case PresenceSnapshot:
		r.peers = make(map[string]struct{}, len(event.Peers))
		for _, peer := range event.Peers {
			if peer != r.peerID {
				r.peers[peer] = struct{}{}
			}
		}
	case PresenceJoined:
		for _, peer := range event.Peers {
			r.peers[peer] = struct{}{}
		}
	case PresenceLeft:
		for _, peer := range event.Peers {
			delete(r.peers, peer)
		}
	}
	r.version = event.Version
	r.mu.Unlock()
	r.events.push(event)
	if event.Kind == PresenceSnapshot {
		r.readyOnce.Do(func() { close(r.ready) })
	}
}

func (r *Responder) start(start *pb.IncomingStart) {
	if start.Broadcast && r.onBcast == nil {
		// Nobody wants broadcasts: its chunks find no stream and are granted as they come.
		r.grant(start.Id, len(start.Data))
		return
	}
	r.mu.Lock()
	in := newIncoming(r, start, int64(r.responseWindow))
	r.streams[start.Id] = in
	r.mu.Unlock()
	r.handlers.Add(1)
	go in.run()
}

// ---- one incoming stream ----

type incoming struct {
	r         *Responder
	request   Request
	ctx       context.Context
	cancel    context.CancelFunc
	abandoned chan struct{} // closed at reset

	mu        sync.Mutex
	cond      *sync.Cond
	chunks    [][]byte
	buffered  int
	bodyEnded bool
	discard   bool
	reset     *Error
	answered  bool
	credit    int64
	ungranted int
}

func newIncoming(r *Responder, start *pb.IncomingStart, credit int64) *incoming {
	in := &incoming{r: r, credit: credit, abandoned: make(chan struct{})}
	in.cond = sync.NewCond(&in.mu)
	in.request = Request{
		ID:        start.Id,
		Sender:    start.Sender,
		Metadata:  start.Metadata,
		Body:      bodyReader{in},
		Broadcast: start.Broadcast,
	}
	if in.request.Metadata == nil {
		in.request.Metadata = map[string]string{}
	}
	if start.DeadlineMs > 0 {
		in.request.Deadline = time.Now().Add(time.Duration(start.DeadlineMs) * time.Millisecond)
		in.ctx, in.cancel = context.WithDeadline(r.ctx, in.request.Deadline)
	} else {
		in.ctx, in.cancel = context.WithCancel(r.ctx)
	}
	if len(start.Data) > 0 {
		in.chunks = append(in.chunks, start.Data)
		in.buffered = len(start.Data)
	}
	in.bodyEnded = start.Last
	return in
}

func (in *incoming) run() {
	defer in.r.handlers.Done()
	// Waits in Read and Write also end with the handler's context.
	go func() {
		<-in.ctx.Done()
		in.mu.Lock()
		in.cond.Broadcast()
		in.mu.Unlock()
	}()
	err := in.call()
	in.mu.Lock()
	answered, reset := in.answered, in.reset
	in.answered = true
	in.mu.Unlock()
	if !answered && reset == nil {
		id := in.request.ID
		switch {
		case errors.Is(in.ctx.Err(), context.DeadlineExceeded):
			// The deadline passed here first (the relay's reset is on its way): no OK now.
			in.r.enqueue(&pb.RespondRequest{Kind: &pb.RespondRequest_Cancel{Cancel: &pb.StreamCancel{
				Id: id, Status: statusToProto(StatusDeadlineExceeded), Message: "the deadline passed"}}}, in.abandoned)
		case in.ctx.Err() != nil: // the session is ending
		case in.request.Broadcast && err != nil:
			in.r.enqueue(&pb.RespondRequest{Kind: &pb.RespondRequest_Cancel{Cancel: &pb.StreamCancel{
				Id: id, Status: statusToProto(StatusCancelled), Message: truncate(err.Error())}}}, in.abandoned)
		case in.request.Broadcast:
		case err == nil:
			in.r.enqueue(&pb.RespondRequest{Kind: &pb.RespondRequest_Chunk{Chunk: &pb.ResponseChunk{
				RequestId: id, Last: true}}}, in.abandoned)
		default:
			in.r.enqueue(endMessage(id, err), in.abandoned)
		}
	}
	in.finished()
}

// call runs the handler; a panic becomes an APPLICATION error for the sender.
func (in *incoming) call() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	if in.request.Broadcast {
		return in.r.onBcast(in.ctx, &in.request)
	}
	return in.r.handler(in.ctx, &in.request, responseWriter{in})
}

func endMessage(id uint64, err error) *pb.RespondRequest {
	end := &pb.ResponseEnd{RequestId: id, Status: statusToProto(StatusApplication), AppCode: 1, Message: truncate(err.Error())}
	var e *Error
	if errors.As(err, &e) && e.Status != StatusOK && e.Status != StatusUnspecified {
		end.Status, end.AppCode, end.Message = statusToProto(e.Status), e.AppCode, truncate(e.Message)
	}
	return &pb.RespondRequest{Kind: &pb.RespondRequest_End{End: end}}
}

func truncate(message string) string {
	if len(message) > 512 {
		return message[:512]
	}
	return message
}

// finished drops what the handler did not read (its sender may still send the rest: the
// session grants it as it comes) and ends the handler's context.
func (in *incoming) finished() {
	in.mu.Lock()
	in.discard = true
	unread := in.buffered + in.ungranted
	in.chunks, in.buffered, in.ungranted = nil, 0, 0
	in.cond.Broadcast()
	in.mu.Unlock()
	in.r.mu.Lock()
	if in.r.streams[in.request.ID] == in {
		delete(in.r.streams, in.request.ID)
	}
	in.r.mu.Unlock()
	in.r.grant(in.request.ID, unread)
	in.cancel()
}

// feed is the session reader's: body bytes for this stream.
func (in *incoming) feed(data []byte, last bool) {
	in.mu.Lock()
	for !in.r.windows && in.buffered >= incomingBuffer && !in.discard && in.reset == nil && in.ctx.Err() == nil {
		in.cond.Wait()
	}
	discarded := in.discard || in.reset != nil
	if !discarded && len(data) > 0 {
		in.chunks = append(in.chunks, data)
		in.buffered += len(data)
	}
	if last {
		in.bodyEnded = true
	}
	in.cond.Broadcast()
	in.mu.Unlock()
	if discarded {
		in.r.grant(in.request.ID, len(data))
	}
}

func (in *incoming) addCredit(n int64) {
	in.mu.Lock()
	in.credit += n
	in.cond.Broadcast()
	in.mu.Unlock()
}

func (in *incoming) resetWith(err *Error) {
	in.mu.Lock()
	if in.reset == nil {
		in.reset = err
		close(in.abandoned)
	}
	in.cond.Broadcast()
	in.mu.Unlock()
	in.cancel()
}

// gone is the error for a stream whose context ended without a reset from the relay.
func (in *incoming) gone() error {
	return &Error{Status: StatusCancelled, Message: "the handler's context ended", Code: codes.Canceled, cause: in.ctx.Err()}
}

type bodyReader struct{ in *incoming }

// Read returns body bytes as they arrive and returns credit for them to the sender.
func (b bodyReader) Read(p []byte) (int, error) {
	in := b.in
	in.mu.Lock()
	for len(in.chunks) == 0 && !in.bodyEnded && in.reset == nil && in.ctx.Err() == nil {
		in.cond.Wait()
	}
	if len(in.chunks) == 0 {
		defer in.mu.Unlock()
		switch {
		case in.reset != nil:
			return 0, in.reset
		case in.bodyEnded:
			return 0, io.EOF
		default:
			return 0, in.gone()
		}
	}
	n := copy(p, in.chunks[0])
	if n == len(in.chunks[0]) {
		in.chunks[0] = nil
		in.chunks = in.chunks[1:]
	} else {
		in.chunks[0] = in.chunks[0][n:]
	}
	in.buffered -= n
	in.ungranted += n
	// Grant in pieces, and always when the buffer runs dry, so the sender never waits on us.
	var grant int
	if len(in.chunks) == 0 || in.ungranted >= int(in.r.incomingWindow/4) {
		grant, in.ungranted = in.ungranted, 0
	}
	in.cond.Broadcast()
	in.mu.Unlock()
	in.r.grant(in.request.ID, grant)
	return n, nil
}

type responseWriter struct{ in *incoming }

// Write streams response bytes within this request's credit.
func (w responseWriter) Write(p []byte) (int, error) {
	in := w.in
	written := 0
	for len(p) > 0 {
		n := len(p)
		if n > ChunkSize {
			n = ChunkSize
		}
		in.mu.Lock()
		if err := in.writableLocked(); err != nil {
			in.mu.Unlock()
			return written, err
		}
		if in.r.windows {
			for in.credit <= 0 && in.reset == nil && in.ctx.Err() == nil {
				in.cond.Wait()
			}
			if err := in.writableLocked(); err != nil {
				in.mu.Unlock()
				return written, err
			}
			if int64(n) > in.credit {
				n = int(in.credit)
			}
			in.credit -= int64(n)
		}
		in.mu.Unlock()
		data := make([]byte, n) // queued, so not p's memory
		copy(data, p[:n])
		message := &pb.RespondRequest{Kind: &pb.RespondRequest_Chunk{Chunk: &pb.ResponseChunk{
			RequestId: in.request.ID, Data: data}}}
		if !in.r.enqueue(message, in.abandoned) {
			return written, in.stopped()
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

func (in *incoming) writableLocked() error {
	switch {
	case in.request.Broadcast:
		return &Error{Status: StatusProtocolError, Message: "a broadcast takes no response", Code: codes.Unknown}
	case in.reset != nil:
		return in.reset
	case in.answered:
		return &Error{Status: StatusProtocolError, Message: "the response has already ended", Code: codes.Unknown}
	case in.ctx.Err() != nil:
		return in.gone()
	}
	return nil
}

func (in *incoming) stopped() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.reset != nil {
		return in.reset
	}
	return in.gone()
}

// Fail ends the response with StatusApplication, code and message.
func (w responseWriter) Fail(code uint32, message string) error {
	in := w.in
	in.mu.Lock()
	if err := in.writableLocked(); err != nil {
		in.mu.Unlock()
		return err
	}
	in.answered = true
	in.mu.Unlock()
	if !in.r.enqueue(endMessage(in.request.ID, ApplicationError(code, message)), in.abandoned) {
		return in.stopped()
	}
	return nil
}

// ---- presence callbacks, in order, off the reader ----

type eventQueue struct {
	f       func(PresenceEvent)
	mu      sync.Mutex
	pending []PresenceEvent
	wake    chan struct{}
	stop    chan struct{}
	once    sync.Once
}

func newEventQueue(f func(PresenceEvent)) *eventQueue {
	q := &eventQueue{f: f, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	if f != nil {
		go q.loop()
	}
	return q
}

func (q *eventQueue) push(event PresenceEvent) {
	if q.f == nil {
		return
	}
	q.mu.Lock()
	q.pending = append(q.pending, event)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) loop() {
	for {
		q.mu.Lock()
		batch := q.pending
		q.pending = nil
		q.mu.Unlock()
		for _, event := range batch {
			q.f(event)
		}
		select {
		case <-q.wake:
		case <-q.stop:
			return
		}
	}
}

func (q *eventQueue) close() { q.once.Do(func() { close(q.stop) }) }
