package vz

import (
	"context"
	"errors"
	"fmt"
	"net"

	"hypefs/shim/engine"
)

// VsockDialer is implemented by machines that open guest vsock connections
// themselves (on macOS there is no host AF_VSOCK: the framework hands out
// one connection per Connect). The shim type-asserts an engine.Machine to
// it and serves the result with package vsockproxy.
type VsockDialer interface {
	DialVsock(ctx context.Context, port uint32) (net.Conn, error)
}

// DialVsock implements VsockDialer. Only a running VM is asked: what the
// framework does with a connection to a paused VM is not documented, so
// the answer is an error at once. A connection that the framework hands
// out after the caller gave up (ctx ended, or the VM ended) is closed.
func (m *Machine) DialVsock(ctx context.Context, port uint32) (net.Conn, error) {
	r, st, err := m.current()
	if err != nil {
		return nil, err
	}
	if !m.cfg.Vsock {
		return nil, fmt.Errorf("vsock port %d: the vm has no socket device: %w", port, engine.ErrUnsupported)
	}
	if st != StateRunning {
		return nil, fmt.Errorf("vsock port %d: the vm is %s; connections need a running vm", port, st)
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := r.vm.ConnectVsock(port)
		if err != nil {
			c = nil // whatever came with the error is no connection
		}
		ch <- result{c, err}
	}()
	late := func() {
		go func() {
			if x := <-ch; x.err == nil && x.c != nil {
				x.c.Close()
			}
		}()
	}
	select {
	case x := <-ch:
		if x.err != nil {
			return nil, fmt.Errorf("connect to guest vsock port %d: %w", port, x.err)
		}
		if x.c == nil {
			return nil, fmt.Errorf("connect to guest vsock port %d: %w", port, errNoConn)
		}
		return x.c, nil
	case <-ctx.Done():
		late()
		return nil, fmt.Errorf("connect to guest vsock port %d: %w", port, ctx.Err())
	case <-m.done:
		late()
		return nil, fmt.Errorf("connect to guest vsock port %d: %w", port, engine.ErrNotRunning)
	}
}

var errNoConn = errors.New("the framework returned neither a connection nor an error")

// asConn turns the framework's (*connection, error) into a net.Conn and an
// error, checking the error first: vz's Connect returns a nil pointer with
// its error, and a nil pointer converted to net.Conn is a non-nil
// interface whose Close panics.
func asConn[P interface {
	*T
	net.Conn
}, T any](c P, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, errNoConn
	}
	return c, nil
}
