//go:build linux

package qemu

import (
	"context"
	"testing"
	"time"
)

// BenchmarkBootToReady boots the test kit under TCG until its init prints
// the ready marker; one boot per op.
func BenchmarkBootToReady(b *testing.B) {
	for b.Loop() {
		m, con, _ := boot(b, nil)
		con.waitFor(b, readyMarker, 0, 60*time.Second)
		b.StopTimer()
		m.Stop(context.Background())
		b.StartTimer()
	}
}

// BenchmarkQMPStop times the QMP stop round trip on a booted guest (each
// op is one stop; the cont that follows is not timed).
func BenchmarkQMPStop(b *testing.B) {
	m, con, _ := boot(b, nil)
	con.waitFor(b, readyMarker, 0, 60*time.Second)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if err := m.Pause(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := m.Resume(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
