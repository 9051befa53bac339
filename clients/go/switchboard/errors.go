package switchboard

// Statuses and the error type every call of this package returns.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Status is how a Switchboard stream ended. The values are those of the proto's Status enum.
type Status int32

// The Switchboard statuses (docs/GATEWAY.md, "Status mapping").
const (
	// StatusUnspecified: the call failed before the relay named a status (for example the
	// connection could not be made); Error.Code then says what gRPC saw.
	StatusUnspecified Status = iota
	// StatusOK: the stream completed.
	StatusOK
	// StatusNoResponders: no peer of the channel serves requests (or the target is absent).
	StatusNoResponders
	// StatusPeerGone: the other side left the channel while the stream was open.
	StatusPeerGone
	// StatusDeadlineExceeded: the stream's deadline passed.
	StatusDeadlineExceeded
	// StatusIdleTimeout: no byte moved on the stream for its idle timeout.
	StatusIdleTimeout
	// StatusCancelled: one side cancelled the stream.
	StatusCancelled
	// StatusRefused: the relay refused the stream (for example a duplicate peer id).
	StatusRefused
	// StatusUnauthenticated: the token is missing, malformed, wrongly signed or expired.
	StatusUnauthenticated
	// StatusPermissionDenied: the token does not allow this call.
	StatusPermissionDenied
	// StatusResourceExhausted: a relay limit was reached.
	StatusResourceExhausted
	// StatusSlowConsumer: a receiver did not keep up and was dropped.
	StatusSlowConsumer
	// StatusProtocolError: a malformed message (bad UUID, missing channel, ...).
	StatusProtocolError
	// StatusInternal: the relay failed.
	StatusInternal
	// StatusApplication: the responder ended the response with its own code and message.
	StatusApplication
)

var statusNames = [...]string{
	"UNSPECIFIED", "OK", "NO_RESPONDERS", "PEER_GONE", "DEADLINE_EXCEEDED", "IDLE_TIMEOUT",
	"CANCELLED", "REFUSED", "UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"SLOW_CONSUMER", "PROTOCOL_ERROR", "INTERNAL", "APPLICATION",
}

// String returns the status name the relay uses in the `switchboard-status` trailer, for
// example "NO_RESPONDERS".
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "STATUS(" + strconv.Itoa(int(s)) + ")"
}

// ParseStatus returns the status named name ("NO_RESPONDERS" or "STATUS_NO_RESPONDERS").
func ParseStatus(name string) (Status, bool) {
	name = strings.TrimPrefix(name, "STATUS_")
	for i, known := range statusNames {
		if known == name {
			return Status(i), true
		}
	}
	return StatusUnspecified, false
}

// Error is a stream or call that did not end with StatusOK.
//
// errors.Is(err, ErrNoResponders) (and the other sentinels) compares the Status alone. A call
// ended by its own context also matches context.Canceled or context.DeadlineExceeded.
type Error struct {
	// Status is the Switchboard status (from the relay's `switchboard-status` trailer, or the
	// reset of an incoming stream).
	Status Status
	// Message is the relay's or the responder's explanation (may be empty).
	Message string
	// AppCode is the responder's own code when Status is StatusApplication.
	AppCode uint32
	// Code is the gRPC status code the call ended with (codes.Unknown for a reset seen by a
	// responder, where no gRPC call ended).
	Code codes.Code

	cause error // the context error when the call's own context ended it
}

// Error formats the status, message and application code.
func (e *Error) Error() string {
	text := e.Status.String()
	if e.Status == StatusUnspecified {
		text = "gRPC " + e.Code.String()
	}
	if e.Message != "" {
		text += ": " + e.Message
	}
	if e.Status == StatusApplication {
		text += fmt.Sprintf(" (app code %d)", e.AppCode)
	}
	return "switchboard: " + text
}

// Is reports whether target is an *Error with the same Status (the sentinels, e.g.
// ErrNoResponders).
func (e *Error) Is(target error) bool {
	var other *Error
	if errors.As(target, &other) {
		return other.Status == e.Status
	}
	return false
}

// Unwrap returns the context error when the call's own context ended it.
func (e *Error) Unwrap() error { return e.cause }

// Sentinel errors for errors.Is: each matches any *Error with its Status.
var (
	// ErrNoResponders matches StatusNoResponders.
	ErrNoResponders = &Error{Status: StatusNoResponders}
	// ErrPeerGone matches StatusPeerGone.
	ErrPeerGone = &Error{Status: StatusPeerGone}
	// ErrDeadlineExceeded matches StatusDeadlineExceeded.
	ErrDeadlineExceeded = &Error{Status: StatusDeadlineExceeded}
	// ErrIdleTimeout matches StatusIdleTimeout.
	ErrIdleTimeout = &Error{Status: StatusIdleTimeout}
	// ErrCancelled matches StatusCancelled.
	ErrCancelled = &Error{Status: StatusCancelled}
	// ErrRefused matches StatusRefused.
	ErrRefused = &Error{Status: StatusRefused}
	// ErrUnauthenticated matches StatusUnauthenticated.
	ErrUnauthenticated = &Error{Status: StatusUnauthenticated}
	// ErrPermissionDenied matches StatusPermissionDenied.
	ErrPermissionDenied = &Error{Status: StatusPermissionDenied}
	// ErrResourceExhausted matches StatusResourceExhausted.
	ErrResourceExhausted = &Error{Status: StatusResourceExhausted}
	// ErrSlowConsumer matches StatusSlowConsumer.
	ErrSlowConsumer = &Error{Status: StatusSlowConsumer}
	// ErrProtocolError matches StatusProtocolError.
	ErrProtocolError = &Error{Status: StatusProtocolError}
	// ErrInternal matches StatusInternal.
	ErrInternal = &Error{Status: StatusInternal}
	// ErrApplication matches StatusApplication (any application code).
	ErrApplication = &Error{Status: StatusApplication}
)

// ApplicationError returns the error a Handler returns to end its response with
// StatusApplication, code and message, which reach the sender unchanged.
func ApplicationError(code uint32, message string) error {
	return &Error{Status: StatusApplication, AppCode: code, Message: message, Code: codes.Unknown}
}

// callError turns what a gRPC call ended with into an *Error: the status from the
// `switchboard-status` trailer when there is one, else the one the gRPC code implies for a
// call ended on this side (cancelled, deadline). ctx is the call's context.
func callError(ctx context.Context, err error, trailer metadata.MD) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, _ := status.FromError(err)
	out := &Error{Status: StatusUnspecified, Message: st.Message(), Code: st.Code()}
	if names := trailer.Get("switchboard-status"); len(names) > 0 {
		if s, ok := ParseStatus(names[0]); ok {
			out.Status = s
		}
	}
	if appCodes := trailer.Get("switchboard-app-code"); len(appCodes) > 0 {
		if n, parse := strconv.ParseUint(appCodes[0], 10, 32); parse == nil {
			out.AppCode = uint32(n)
		}
	}
	if st.Code() == codes.Unknown { // a plain context error, not from gRPC
		switch {
		case errors.Is(err, context.Canceled):
			out.Code = codes.Canceled
		case errors.Is(err, context.DeadlineExceeded):
			out.Code = codes.DeadlineExceeded
		}
	}
	if out.Status == StatusUnspecified {
		switch out.Code {
		case codes.Canceled:
			out.Status = StatusCancelled
		case codes.DeadlineExceeded:
			out.Status = StatusDeadlineExceeded
		}
	}
	if ctx != nil && ctx.Err() != nil {
		out.cause = ctx.Err()
	}
	return out
}
