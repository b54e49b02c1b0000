package instance

import (
	"errors"
	"fmt"
	"syscall"
)

// Error is a refusal a user caused: an errno for the kernel, a sentence
// for the instance's error file.
type Error struct {
	Errno syscall.Errno
	Msg   string
}

func (e *Error) Error() string { return e.Msg }

// Is lets errors.Is(err, syscall.EINVAL) and friends match.
func (e *Error) Is(target error) bool {
	t, ok := target.(syscall.Errno)
	return ok && t == e.Errno
}

func errf(errno syscall.Errno, format string, args ...any) *Error {
	return &Error{Errno: errno, Msg: fmt.Sprintf(format, args...)}
}

// Errno maps any error to the errno a filesystem should return.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Errno
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return syscall.EIO
}
