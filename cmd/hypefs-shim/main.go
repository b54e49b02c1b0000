// Command hypefs-shim supervises one VM. The daemon starts it detached
// (its own session) with --config naming an api.Config file and a pipe on
// fd 3; the shim writes "ok" or "error: <sentence>" on that pipe once the
// VM runs or cannot, then lives until the VM ends, whatever happens to the
// daemon.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"hypefs/internal/logcap"
	"hypefs/shim"
	"hypefs/shim/api"
)

func main() {
	cfgPath := flag.String("config", "", "shim config file (JSON)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ready := os.NewFile(3, "ready")
	report := func(msg string) {
		if ready != nil {
			fmt.Fprintln(ready, msg)
			ready.Close()
			ready = nil
		}
	}
	fail := func(err error) {
		log.Error("shim failed", "err", err)
		report("error: " + err.Error())
		os.Exit(1)
	}
	if *cfgPath == "" {
		fail(fmt.Errorf("usage: hypefs-shim --config FILE"))
	}
	cfg, err := api.LoadConfig(*cfgPath)
	if err != nil {
		fail(err)
	}
	// What the shim makes (records, logs, sockets, saved states) is
	// root's alone; modes given explicitly are never looser than this.
	syscall.Umask(0o077)
	// Its own log (stderr, shim.log) is capped like the others; a panic's
	// trace still reaches the file directly.
	log = slog.New(slog.NewJSONHandler(logcap.Wrap(os.Stderr, "/proc/self/fd/2", cfg.LogMax), nil))
	prepareProcess()
	// The daemon's terminal signals are not ours; SIGTERM ends the VM.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	s, err := shim.Start(ctx, cfg, newEngine(), log)
	cancel()
	if err != nil {
		fail(err)
	}
	log.Info("vm started", "name", cfg.Engine.Name)
	report("ok")
	select {
	case <-s.Done():
	case sig := <-term:
		log.Info("signal, stopping the VM", "signal", sig.String())
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.Stop(sctx, "the shim was asked to stop ("+sig.String()+")")
		cancel()
		<-s.Done()
	}
	s.Close()
	log.Info("vm ended; shim exits")
}
