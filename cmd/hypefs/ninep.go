package main

import (
	"flag"
	"log/slog"

	hfs "hypefs/fs"
	"hypefs/fs/ninep"
)

// nineP holds the 9P flags of mount and serve.
type nineP struct {
	addr        string
	allowRemote bool
}

func ninePFlags(fl *flag.FlagSet) *nineP {
	n := &nineP{}
	fl.StringVar(&n.addr, "9p", "", "also serve the tree over 9P2000.L at `ADDR`: unix:PATH (mode 0600) or tcp:HOST:PORT (loopback; see docs/9p.md)")
	fl.BoolVar(&n.allowRemote, "9p-allow-remote", false, "let --9p listen on a non-loopback TCP address (9P2000.L has no authentication: prefer ssh forwarding)")
	return n
}

// start serves tree over 9P when --9p was given and returns what stops
// it (a no-op without --9p).
func (n *nineP) start(tree *hfs.Tree, log *slog.Logger) (stop func(), err error) {
	if n.addr == "" {
		return func() {}, nil
	}
	l, err := ninep.Listen(n.addr, n.allowRemote)
	if err != nil {
		return nil, err
	}
	srv := ninep.New(tree.Root(), log)
	go func() {
		if err := srv.Serve(l); err != nil {
			log.Error("9p server stopped", "err", err)
		}
	}()
	log.Info("serving 9P2000.L", "addr", n.addr)
	return func() {
		if err := srv.Close(); err != nil {
			log.Warn("9p close", "err", err)
		}
	}, nil
}
