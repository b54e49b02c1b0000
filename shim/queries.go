package shim

import "bytes"

// queryFilter removes terminal queries from the console's output: the
// control sequences a program sends to ask the terminal something, such
// as busybox's line editor asking where the cursor is (ESC [ 6 n) after
// every prompt. Nothing on the other side of a hypefs console answers
// them; in the log they are noise, and a live reader's own terminal
// would answer them into that reader's input.
//
// Removed: CSI sequences ending in 'n' (device status reports: ESC[5n,
// ESC[6n, ESC[?6n) or 'c' (device attributes: ESC[c, ESC[0c, ESC[>c).
// Every other byte passes unchanged. A sequence split across writes is
// held back until the write that completes it.
type queryFilter struct {
	held []byte // the start of a sequence not yet complete
}

// maxQuery bounds a held sequence; anything longer is not a query.
const maxQuery = 16

// filter returns p without the terminal queries in it (and with what was
// held back from earlier writes, where it turned out not to be one).
func (f *queryFilter) filter(p []byte) []byte {
	if len(f.held) == 0 && bytes.IndexByte(p, 0x1b) < 0 {
		return p // the common case: nothing to look at
	}
	in := append(f.held, p...)
	f.held = nil
	out := make([]byte, 0, len(in))
	for k := 0; k < len(in); {
		if in[k] != 0x1b {
			out = append(out, in[k])
			k++
			continue
		}
		n, query, complete := csiQuery(in[k:])
		switch {
		case !complete && len(in)-k < maxQuery:
			f.held = append(f.held, in[k:]...)
			return out
		case !complete:
			out = append(out, in[k])
			k++
		case query:
			k += n
		default:
			out = append(out, in[k:k+n]...)
			k += n
		}
	}
	return out
}

// csiQuery looks at b, which starts with ESC. It returns the length of
// the sequence there, whether it is a query, and whether it is complete
// (false: more bytes are needed to tell).
func csiQuery(b []byte) (n int, query, complete bool) {
	if len(b) < 2 {
		return 0, false, false
	}
	if b[1] != '[' {
		return 1, false, true // not a CSI: ESC passes, the rest is looked at as usual
	}
	for k := 2; k < len(b); k++ {
		c := b[k]
		switch {
		case c >= '0' && c <= '9', c == ';', c == '?', c == '>', c == '=':
			continue
		case c >= 0x40 && c <= 0x7e: // the final byte
			return k + 1, c == 'n' || c == 'c', true
		default:
			return k, false, true // not a query's shape: pass it on
		}
	}
	return 0, false, false
}
