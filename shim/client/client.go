// Package client talks to a shim's HTTP API over its Unix socket.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"hypefs/shim/api"
	"hypefs/shim/engine"
)

// Errors by the status code class Cloud Hypervisor uses. A 405 or 409
// (the VM's state forbids the action) wraps engine.ErrWrongState.
var (
	ErrNoVM = errors.New("no VM") // 404
	// ErrUnsupported (501): the engine cannot do this at all (vm.snapshot
	// on vz). Such an error also matches syscall.EOPNOTSUPP, the errno the
	// filesystem answers with.
	ErrUnsupported = errors.New("not supported")
)

// unsupportedError is a 501 answer: its text is the shim's sentence, and
// it matches both ErrUnsupported and syscall.EOPNOTSUPP.
type unsupportedError struct{ msg string }

func (e *unsupportedError) Error() string   { return e.msg }
func (e *unsupportedError) Unwrap() []error { return []error{ErrUnsupported, syscall.EOPNOTSUPP} }

// Client is safe for concurrent use.
type Client struct {
	hc *http.Client
	// events uses its own transport so that a long stream never holds a
	// connection the control calls need.
	ec *http.Client
}

// New returns a client for the shim listening on socket. Nothing is dialled yet.
func New(socket string) *Client {
	mk := func() *http.Client {
		return &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		}}
	}
	return &Client{hc: mk(), ec: mk()}
}

// Close drops idle connections.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
	c.ec.CloseIdleConnections()
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	_, err := c.doSeq(ctx, method, path, body, out)
	return err
}

// Effect is what a successful action led to: the shim's state sequence
// number and state right after it (zero where the shim did not say).
type Effect struct {
	Seq    uint64
	State  string
	Detail string // the detail of the state's event (api.DetailHeader)
}

// doSeq is do, also returning the effect a successful action answered
// with (api.SeqHeader, api.StateHeader, api.DetailHeader).
func (c *Client) doSeq(ctx context.Context, method, path string, body, out any) (Effect, error) {
	var none Effect
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return none, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://shim"+path, rd)
	if err != nil {
		return none, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return none, fmt.Errorf("shim %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e api.Error
		json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		switch resp.StatusCode {
		case http.StatusNotFound:
			return none, fmt.Errorf("%w: %s", ErrNoVM, e.Error)
		case http.StatusMethodNotAllowed, http.StatusConflict:
			return none, fmt.Errorf("%w: %s", engine.ErrWrongState, e.Error)
		case http.StatusNotImplemented:
			return none, &unsupportedError{e.Error}
		}
		return none, fmt.Errorf("shim %s: %s", path, e.Error)
	}
	var eff Effect
	eff.Seq, _ = strconv.ParseUint(resp.Header.Get(api.SeqHeader), 10, 64)
	eff.State = resp.Header.Get(api.StateHeader)
	eff.Detail = resp.Header.Get(api.DetailHeader)
	if out != nil {
		return eff, json.NewDecoder(resp.Body).Decode(out)
	}
	io.Copy(io.Discard, resp.Body)
	return eff, nil
}

// Act runs a PUT action (api.PathPause, PathResume, PathReboot,
// PathPowerButton, PathShutdown; PathGracefulStop and PathSnapshot with
// a body) and returns its effect: a caller following the events may apply
// it at once, ordered by Seq.
func (c *Client) Act(ctx context.Context, path string, body any) (Effect, error) {
	return c.doSeq(ctx, http.MethodPut, path, body, nil)
}

// Ping asks the shim for its version (vmm.ping): an answer means it lives.
func (c *Client) Ping(ctx context.Context) (api.VmmPingResponse, error) {
	var r api.VmmPingResponse
	return r, c.do(ctx, http.MethodGet, api.PathPing, nil, &r)
}

// Status asks for the shim's own view of the VM (hypefs.status).
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var r api.Status
	return r, c.do(ctx, http.MethodGet, api.PathStatus, nil, &r)
}

// ShutdownVMM ends the VM, if any, and the shim.
func (c *Client) ShutdownVMM(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, api.PathVMMShutdown, nil, nil)
}

// Events calls fn for every state change, starting with the current
// state, until the VM ends (nil), the stream breaks or ctx ends (an error).
func (c *Client) Events(ctx context.Context, fn func(api.Event)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://shim"+api.PathEvents, nil)
	if err != nil {
		return err
	}
	resp, err := c.ec.Do(req)
	if err != nil {
		return fmt.Errorf("shim events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("shim events: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("shim events: %w", err)
		}
		fn(ev)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("shim events: %w", err)
	}
	return nil
}
