package wire

import (
	"errors"
	"fmt"
)

// ErrSyntax is wrapped by every decoding error.
var ErrSyntax = errors.New("wire: malformed frame")

// SyntaxError says where and why a frame could not be decoded.
type SyntaxError struct {
	Offset int    // byte offset in the frame
	Msg    string // what was wrong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("wire: malformed frame at byte %d: %s", e.Offset, e.Msg)
}

// Unwrap makes errors.Is(err, ErrSyntax) true.
func (e *SyntaxError) Unwrap() error { return ErrSyntax }
