// Package errno is the error a refused request carries to a user: an
// errno for the kernel (what the write, mkdir or rmdir returns) and a
// sentence for people (what the `error` file shows, ending in a hint where
// a fix exists). The file tree, the instance manager and the image store
// all refuse with it, and the filesystem adapters turn any error into an
// errno with Of.
package errno

import (
	"errors"
	"fmt"
	"syscall"
)

// Error is a refusal: Errno for the kernel, Msg for the error file. More
// about the refusal (when, which command) may be added as fields; Error()
// stays the sentence.
type Error struct {
	Errno syscall.Errno
	Msg   string
}

// New returns a refusal with errno and the sentence msg.
func New(errno syscall.Errno, msg string) *Error { return &Error{Errno: errno, Msg: msg} }

// Errorf returns a refusal with errno and a sentence made as fmt.Sprintf
// makes it (%w is not for refusals: the sentence is all they carry).
func Errorf(errno syscall.Errno, format string, args ...any) *Error {
	return &Error{Errno: errno, Msg: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return e.Msg }

// Is lets errors.Is(err, syscall.EINVAL) and friends match.
func (e *Error) Is(target error) bool {
	t, ok := target.(syscall.Errno)
	return ok && t == e.Errno
}

// Of maps any error to the errno a filesystem should return: a refusal's,
// a syscall.Errno found in the chain, else EIO. A nil error is 0.
func Of(err error) syscall.Errno {
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
