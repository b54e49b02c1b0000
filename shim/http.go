package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"hypefs/shim/api"
	"hypefs/shim/engine"
)

// errBadRequest: the request's body is wrong (400).
var errBadRequest = errors.New("bad request")

// Version is reported by vmm.ping.
var Version = "hypefs-shim-dev"

// routes is the one table of the API. Methods and status codes follow
// Cloud Hypervisor: 204 done, 400 bad request, 404 no VM, 405 wrong state
// (engine.ErrWrongState), 500 failure; and 501 for what the engine cannot
// do at all (vm.snapshot on vz).
func (s *Shim) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathPing, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, api.VmmPingResponse{Version: Version, PID: os.Getpid(), BuildVersion: Version, Features: []string{"hypefs", s.eng.Name()}})
	})
	mux.HandleFunc("GET "+api.PathInfo, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.vmInfo())
	})
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.status())
	})
	mux.HandleFunc("GET "+api.PathEvents, s.serveEvents)
	s.action(mux, api.PathPause, s.pause)
	s.action(mux, api.PathResume, s.resume)
	s.action(mux, api.PathReboot, s.reboot)
	s.action(mux, api.PathPowerButton, func(ctx context.Context) error {
		if st := s.status().State; st == api.Paused {
			return fmt.Errorf("%w: the VM is paused", engine.ErrWrongState)
		}
		return s.m.PowerButton(ctx)
	})
	s.action(mux, api.PathShutdown, func(ctx context.Context) error { return s.stop(ctx, "") })
	mux.HandleFunc("PUT "+api.PathGracefulStop, func(w http.ResponseWriter, r *http.Request) {
		var gs api.GracefulStop
		if err := decodeBody(r, &gs); err != nil || gs.TimeoutSeconds <= 0 {
			writeError(w, http.StatusBadRequest, errors.New("body must be {\"timeout_seconds\": N} with N > 0"))
			return
		}
		s.answer(w, s.gracefulStop(r.Context(), time.Duration(gs.TimeoutSeconds*float64(time.Second))))
	})
	mux.HandleFunc("PUT "+api.PathSnapshot, func(w http.ResponseWriter, r *http.Request) {
		var sc api.VmSnapshotConfig
		if err := decodeBody(r, &sc); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		s.answer(w, s.snapshot(r.Context(), sc.DestinationURL))
	})
	mux.HandleFunc("PUT "+api.PathVMMShutdown, func(w http.ResponseWriter, r *http.Request) {
		err := s.stop(r.Context(), "")
		if err != nil && !errors.Is(err, engine.ErrNotRunning) {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// action registers a PUT endpoint that runs fn and answers with its outcome.
func (s *Shim) action(mux *http.ServeMux, path string, fn func(context.Context) error) {
	mux.HandleFunc("PUT "+path, func(w http.ResponseWriter, r *http.Request) {
		if s.ended() {
			writeError(w, http.StatusNotFound, errors.New("the VM has ended"))
			return
		}
		s.answer(w, fn(r.Context()))
	})
}

func (s *Shim) answer(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		seq, state, why := s.Seq()
		w.Header().Set(api.SeqHeader, strconv.FormatUint(seq, 10))
		w.Header().Set(api.StateHeader, state)
		w.Header().Set(api.DetailHeader, why)
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, engine.ErrNotRunning):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, engine.ErrWrongState):
		writeError(w, http.StatusMethodNotAllowed, err)
	case errors.Is(err, engine.ErrUnsupported):
		writeError(w, http.StatusNotImplemented, err)
	case errors.Is(err, errBadRequest):
		writeError(w, http.StatusBadRequest, err)
	default:
		writeError(w, http.StatusInternalServerError, err)
	}
}

// snapshotRefuser is implemented by machines that cannot snapshot at all
// (vz): vm.snapshot then answers that, whatever the VM's state.
type snapshotRefuser interface {
	SnapshotSupported() error
}

func (s *Shim) snapshot(ctx context.Context, dest string) error {
	if sr, ok := s.m.(snapshotRefuser); ok {
		if err := sr.SnapshotSupported(); err != nil {
			return err
		}
	}
	u, err := url.Parse(dest)
	if err != nil || u.Scheme != "file" || u.Path == "" {
		return fmt.Errorf("%w: destination_url must be file:///directory", errBadRequest)
	}
	if st := s.status().State; st != api.Paused {
		return fmt.Errorf("%w: the VM must be paused to snapshot it (it is %s)", engine.ErrWrongState, st)
	}
	if err := os.MkdirAll(u.Path, 0o700); err != nil {
		return fmt.Errorf("snapshot directory: %w", err)
	}
	return s.m.Snapshot(ctx, u.Path)
}

func (s *Shim) vmInfo() api.VmInfo {
	st := s.status()
	spec := s.cfg.Engine
	info := api.VmInfo{
		Config: api.VmConfig{
			CPUs:    api.CpusConfig{BootVcpus: spec.CPUs, MaxVcpus: spec.CPUs},
			Memory:  api.MemoryConfig{Size: int64(spec.MemoryMiB) << 20},
			Payload: api.PayloadConfig{Kernel: spec.Kernel, Initramfs: spec.Initramfs, Cmdline: spec.Cmdline},
			Serial:  api.ConsoleConfig{Mode: "Socket", Socket: s.cfg.ConsoleSocket},
			Console: api.ConsoleConfig{Mode: "Off"},
			Rng:     &api.RngConfig{Src: "/dev/urandom"},
		},
		MemoryActualSize: int64(spec.MemoryMiB) << 20,
	}
	for _, d := range spec.Disks {
		info.Config.Disks = append(info.Config.Disks, api.DiskConfig{Path: d.Path, Readonly: d.ReadOnly})
	}
	for _, n := range spec.NICs {
		info.Config.Net = append(info.Config.Net, api.NetConfig{Tap: n.Tap, MAC: n.MAC})
	}
	switch st.State {
	case api.Paused:
		info.State = api.StatePaused
	case api.Stopped, api.Crashed:
		info.State = api.StateShutdown
	default:
		info.State = api.StateRunning
	}
	return info
}

// serveEvents streams state changes as JSON lines, starting with the
// current state, until the VM ends or the client goes away.
func (s *Shim) serveEvents(w http.ResponseWriter, r *http.Request) {
	ch, first := s.subscribe()
	defer s.unsubscribe(ch)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	fl, _ := w.(http.Flusher)
	send := func(ev api.Event) bool {
		if err := enc.Encode(ev); err != nil {
			return false
		}
		if fl != nil {
			fl.Flush()
		}
		return true
	}
	if !send(first) {
		return
	}
	for {
		select {
		case ev, ok := <-ch:
			if !ok || !send(ev) {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
}
