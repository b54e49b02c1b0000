// Package cleanup unwinds a sequence of steps that failed halfway.
//
// A sequence (boot a VM, pull an image) is written as named steps; each
// step that makes something (a directory, a listener, a process) pushes
// what unmakes it onto one Stack. If a later step fails, the caller's
// deferred Unwind runs the pushed undos once, newest first; when every
// step succeeded, Release keeps what was made. This replaces unwinding by
// hand at every return.
package cleanup

// Stack is a stack of undo functions. The zero value is empty and ready.
type Stack struct {
	undo []func()
}

// Push adds an undo, to run before every undo pushed earlier.
func (s *Stack) Push(undo func()) { s.undo = append(s.undo, undo) }

// Unwind runs the pending undos, newest first, and empties the stack.
func (s *Stack) Unwind() {
	for k := len(s.undo) - 1; k >= 0; k-- {
		s.undo[k]()
	}
	s.undo = nil
}

// Release empties the stack without running anything: the steps
// succeeded and what they made stays.
func (s *Stack) Release() { s.undo = nil }
