package vz

import (
	"context"
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

// DialVsock implements VsockDialer.
func (m *Machine) DialVsock(ctx context.Context, port uint32) (net.Conn, error) {
	r, _, err := m.current()
	if err != nil {
		return nil, err
	}
	if !m.cfg.Vsock {
		return nil, fmt.Errorf("vsock port %d: the vm has no socket device: %w", port, engine.ErrUnsupported)
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := r.vm.ConnectVsock(port)
		ch <- result{c, err}
	}()
	// A connection that arrives after the caller gave up is closed, not leaked.
	late := func() {
		go func() {
			if x := <-ch; x.c != nil {
				x.c.Close()
			}
		}()
	}
	select {
	case x := <-ch:
		if x.err != nil {
			return nil, fmt.Errorf("connect to guest vsock port %d: %w", port, x.err)
		}
		return x.c, nil
	case <-ctx.Done():
		late()
		return nil, fmt.Errorf("connect to guest vsock port %d: %w", port, ctx.Err())
	case <-m.done:
		late()
		return nil, engine.ErrNotRunning
	}
}
