package instances

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/outbound-dev/outbound/handlers/hostmatch"
	"github.com/outbound-dev/outbound/internal/store"
)

// Errors a caller branches on. Status maps them to HTTP statuses.
var (
	ErrNotFound       = errors.New("instance not found")
	ErrExists         = errors.New("instance already exists")
	ErrBadID          = errors.New("invalid instance id")
	ErrSourceTaken    = errors.New("source range already belongs to another instance")
	ErrUnknownClass   = errors.New("unknown class")
	ErrUnknownMethod  = errors.New("unknown runtime method")
	ErrBadArgs        = errors.New("bad arguments")
	ErrUnknownHandler = errors.New("unknown outbound handler")
)

// UnknownHandlerError is upstream's error for a handler name that the
// class's outboundHandlers does not have. Its text is upstream's, exactly.
type UnknownHandlerError struct {
	Method, Class string
}

func (e *UnknownHandlerError) Error() string {
	return fmt.Sprintf("Outbound handler method '%s' not found in outboundHandlers for %s", e.Method, e.Class)
}

// Is makes errors.Is(err, ErrUnknownHandler) true.
func (e *UnknownHandlerError) Is(target error) bool { return target == ErrUnknownHandler }

// Status is the HTTP status the control API answers for err: 400 for bad
// input (arguments, patterns, ids, classes, handler names), 404 for an
// unknown instance or method, 409 for an existing id, 503 when the store
// cannot be reached, else 500.
func Status(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrUnknownMethod):
		return http.StatusNotFound
	case errors.Is(err, ErrExists), errors.Is(err, ErrSourceTaken):
		return http.StatusConflict
	case errors.Is(err, ErrBadArgs), errors.Is(err, ErrUnknownHandler), errors.Is(err, ErrBadID),
		errors.Is(err, ErrUnknownClass), errors.Is(err, hostmatch.ErrBadPattern):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}
