package switchboard

// Clusters: which relay serves a channel (Locate), the per-channel cache of that answer, and
// the connections to the other relays of a cluster.

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "switchboard.dev/client/internal/switchboardpb"
)

// maxRoutes bounds the channels whose location a Client remembers; past it, one remembered
// channel is forgotten per new one (it is located again when next used).
const maxRoutes = 4096

// Location is where a channel is served, as Locate answers it.
type Location struct {
	// Here is true when the relay asked serves the channel (or runs alone, or has no Locate).
	Here bool
	// NodeID is the node id of the relay that serves the channel; empty when Here.
	NodeID string
	// GRPCAddress is that relay's advertised gRPC door (HOST:PORT); empty when Here, and when
	// that relay has no gRPC door.
	GRPCAddress string
	// NativeAddress is that relay's advertised native door (HOST:PORT); empty when Here.
	NativeAddress string
	// Revision is the cluster membership revision of the answer; 0 for a relay alone.
	Revision uint64
}

// WithLocate turns locating on (the default) or off. On, the first call that names a channel
// asks the relay Dial was given where that channel is served and makes it and the later calls
// for the channel on that relay, and a carried call's switchboard-served-by moves them to the
// relay it names (see the README's "Clusters"). Off, every call goes to the relay Dial was
// given, which carries one for a channel served elsewhere or, when it cannot, ends it with gRPC
// UNAVAILABLE (StatusRefused) "channel is served by relay N (...)".
func WithLocate(enabled bool) DialOption {
	return func(c *dialConfig) { c.noLocate = !enabled }
}

// Locate asks the relay Dial was given where channel is served (with the client's token). A
// relay without Locate (older than clusters) answers Here. It neither reads nor fills the
// cache the other calls use.
func (c *Client) Locate(ctx context.Context, channel string) (Location, error) {
	var trailer metadata.MD
	answer, err := c.stub.Locate(ctx, &pb.LocateRequest{Channel: channel, Token: c.token}, grpc.Trailer(&trailer))
	if status.Code(err) == codes.Unimplemented {
		return Location{Here: true}, nil
	}
	if err != nil {
		return Location{}, callError(ctx, err, trailer)
	}
	return Location{
		Here:          answer.GetHere(),
		NodeID:        answer.GetNodeId(),
		GRPCAddress:   answer.GetGrpcAddress(),
		NativeAddress: answer.GetNativeAddress(),
		Revision:      answer.GetRevision(),
	}, nil
}

// route is the located relay of one channel; ready is closed once stub or err is set.
type route struct {
	ready chan struct{}
	stub  pb.SwitchboardServiceClient
	err   error
}

// routeTo returns the relay to make channel's calls on: the cached answer, else Locate's.
// Concurrent first calls for a channel share one Locate.
func (c *Client) routeTo(ctx context.Context, channel string) (*route, error) {
	if !c.locating {
		return c.home, nil
	}
	// A Locate that failed under another caller's context is tried again under ours; a few
	// rounds at most.
	var last error
	for round := 0; round < 3; round++ {
		c.mu.Lock()
		r, found := c.routes[channel]
		if !found {
			r = &route{ready: make(chan struct{})}
			c.rememberLocked(channel, r)
			c.mu.Unlock()
			r.stub, r.err = c.locate(ctx, channel)
			if r.err != nil {
				c.mu.Lock()
				if c.routes[channel] == r {
					delete(c.routes, channel)
				}
				c.mu.Unlock()
			}
			close(r.ready)
			return r, r.err
		}
		c.mu.Unlock()
		select {
		case <-r.ready:
		case <-ctx.Done():
			return nil, callError(ctx, ctx.Err(), nil)
		}
		if r.err == nil {
			return r, nil
		}
		last = r.err
	}
	return nil, last
}

func (c *Client) rememberLocked(channel string, r *route) {
	if len(c.routes) >= maxRoutes {
		for other, located := range c.routes { // map order: an arbitrary one
			select {
			case <-located.ready:
				delete(c.routes, other)
			default:
				continue
			}
			break
		}
	}
	c.routes[channel] = r
}

// locate asks the configured relay and returns the stub for the relay that serves channel.
func (c *Client) locate(ctx context.Context, channel string) (pb.SwitchboardServiceClient, error) {
	var trailer metadata.MD
	answer, err := c.stub.Locate(ctx, &pb.LocateRequest{Channel: channel, Token: c.token}, grpc.Trailer(&trailer))
	switch status.Code(err) {
	case codes.OK:
	case codes.Unimplemented, codes.PermissionDenied:
		// A relay older than clusters; or a token without the presence permission, which
		// Locate needs: stay, and the call itself says whether it is allowed there.
		return c.stub, nil
	default:
		return nil, callError(ctx, err, trailer)
	}
	if answer.GetHere() {
		return c.stub, nil
	}
	address := answer.GetGrpcAddress()
	if address == "" {
		return nil, &Error{Status: StatusRefused, Code: codes.Unavailable,
			Message: "channel is served by relay " + answer.GetNodeId() + ", which has no gRPC door"}
	}
	conn, err := c.relay(ctx, address)
	if err != nil {
		return nil, err
	}
	return pb.NewSwitchboardServiceClient(conn), nil
}

// relay returns the connection to another relay of the cluster, opened once per address with
// the client's own credentials and options.
func (c *Client) relay(ctx context.Context, address string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, &Error{Status: StatusCancelled, Code: codes.Canceled, Message: "the client is closed"}
	}
	if conn, found := c.relays[address]; found {
		return conn, nil
	}
	conn, err := grpc.DialContext(ctx, address, c.relayOptions...)
	if err != nil {
		return nil, callError(ctx, err, nil)
	}
	c.relays[address] = conn
	return conn, nil
}

// movedAway reports whether err says that channel is not (or no longer) served where the call
// went: the relay named the owner, or could not serve it now.
func movedAway(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.Code != codes.Unavailable {
		return false
	}
	return strings.HasPrefix(e.Message, "channel is served by relay") ||
		strings.HasPrefix(e.Message, "channel unavailable on this relay")
}

// unreachable reports whether err is a connection that failed before any relay answered.
func unreachable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == codes.Unavailable && e.Status == StatusUnspecified
}

// servedByKey is the initial metadata of a call a relay carried to the relay serving the
// channel: that relay's gRPC address.
const servedByKey = "switchboard-served-by"

// learn points channel's cached location at the relay a carried call named (header is the
// call's initial metadata), when the call went by route used, so the next call goes straight
// there. Locating off, every call stays on the relay Dial was given.
func (c *Client) learn(channel string, used *route, header metadata.MD) {
	if used == c.home {
		return
	}
	named := header.Get(servedByKey)
	if len(named) == 0 || named[0] == "" {
		return
	}
	conn, err := c.relay(context.Background(), named[0]) // does not block (no WithBlock)
	if err != nil {
		return
	}
	moved := &route{ready: make(chan struct{}), stub: pb.NewSwitchboardServiceClient(conn)}
	close(moved.ready)
	c.mu.Lock()
	if c.routes[channel] == used {
		c.routes[channel] = moved
	}
	c.mu.Unlock()
}

// forget drops channel's cached location r after a call on it ended with err, when err says
// the channel moved (true: the call may be retried once if it sent nothing) or the relay could
// not be reached (so the next call locates again).
func (c *Client) forget(channel string, r *route, err error) bool {
	if r == c.home {
		return false
	}
	moved := movedAway(err)
	if moved || unreachable(err) {
		c.mu.Lock()
		if c.routes[channel] == r {
			delete(c.routes, channel)
		}
		c.mu.Unlock()
	}
	return moved
}
