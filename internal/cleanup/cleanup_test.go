package cleanup

import (
	"slices"
	"testing"
)

func TestStack(t *testing.T) {
	var ran []int
	var s Stack
	for k := 1; k <= 3; k++ {
		s.Push(func() { ran = append(ran, k) })
	}
	s.Unwind()
	s.Unwind() // once only
	if !slices.Equal(ran, []int{3, 2, 1}) {
		t.Fatalf("unwound %v, want [3 2 1]", ran)
	}
	ran = nil
	s.Push(func() { ran = append(ran, 9) })
	s.Release()
	s.Unwind()
	if len(ran) != 0 {
		t.Fatalf("released stack ran %v", ran)
	}
}
