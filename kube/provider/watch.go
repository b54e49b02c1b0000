package provider

import (
	"bufio"
	"context"
	"os"
	"strings"
	"sync"
	"time"
)

// mountState is whether the tree answers, and why not.
type mountState struct {
	up   bool
	why  string
	seen bool // a first answer (either way) was given
}

// Run follows the tree until the provider's context ends: it reads /events, whose lines say
// which instance changed, and rereads only that instance (nothing is
// polled per instance). When the mount goes away (the daemon stopped or
// died) the node turns NotReady; it checks for the mount once a second,
// and when it is back it rereads every Pod's instance once, since events
// sent meanwhile were lost, and the node turns Ready.
func (p *Provider) Run() {
	ctx := p.ctx
	for ctx.Err() == nil {
		err := p.tree.Alive()
		var f *os.File
		if err == nil {
			f, err = os.Open(p.tree.Path("events"))
		}
		if err != nil {
			p.setMount(false, err.Error())
			sleepCtx(ctx, time.Second)
			continue
		}
		p.setMount(true, "")
		p.resync()
		p.follow(ctx, f)
		f.Close()
	}
}

// follow reads event lines until the file fails (the mount went away).
func (p *Provider) follow(ctx context.Context, f *os.File) {
	r := bufio.NewReaderSize(f, 64<<10)
	for ctx.Err() == nil {
		line, err := r.ReadString('\n')
		if fields := strings.Fields(line); len(fields) >= 3 && strings.HasSuffix(line, "\n") {
			p.event(fields[1])
		}
		if err != nil {
			return
		}
	}
}

// event handles one line of /events: TIME NAME STATE [detail].
func (p *Provider) event(name string) {
	p.mu.Lock()
	ps := p.byInst[name]
	p.mu.Unlock()
	if ps != nil {
		p.kick(ps)
	}
}

// resync rereads every Pod's instance once.
func (p *Provider) resync() {
	p.mu.Lock()
	all := make([]*podState, 0, len(p.pods))
	for _, ps := range p.pods {
		all = append(all, ps)
	}
	p.mu.Unlock()
	for _, ps := range all {
		p.kick(ps)
	}
}

func (p *Provider) setMount(up bool, why string) {
	p.mu.Lock()
	changed := !p.mount.seen || p.mount.up != up
	p.mount = mountState{up: up, why: why, seen: true}
	p.mu.Unlock()
	if !changed {
		return
	}
	if up {
		p.log.Info("hypefs tree is up", "mount", p.tree.Root)
	} else {
		p.log.Warn("hypefs tree is away", "mount", p.tree.Root, "why", why)
	}
	p.node.mountChanged(p, up, why)
}

// MountUp says whether the tree answered at the last look.
func (p *Provider) MountUp() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mount.up
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// broadcast is a condition a goroutine can wait on with a select: Wait
// returns a channel that is closed at the next Signal.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) Wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) Signal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}
