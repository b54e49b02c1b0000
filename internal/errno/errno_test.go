package errno

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
)

func TestOf(t *testing.T) {
	refusal := Errorf(syscall.EBUSY, "pause: not possible while the instance is %s", "new")
	if refusal.Error() != "pause: not possible while the instance is new" {
		t.Errorf("sentence %q", refusal.Error())
	}
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{refusal, syscall.EBUSY},
		{fmt.Errorf("boot: %w", New(syscall.ENOENT, "no such image")), syscall.ENOENT},
		{fmt.Errorf("open: %w", syscall.EACCES), syscall.EACCES},
		{io.ErrUnexpectedEOF, syscall.EIO},
	} {
		if got := Of(tc.err); got != tc.want {
			t.Errorf("Of(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if !errors.Is(refusal, syscall.EBUSY) || errors.Is(refusal, syscall.EINVAL) {
		t.Error("errors.Is does not match a refusal by its errno")
	}
}
