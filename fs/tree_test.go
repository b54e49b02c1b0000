package fs

import "testing"

// A config written in pieces is committed once it is whole, or once it
// is broken in a way more bytes cannot mend; a document cut short
// anywhere (inside a string, an escape, a literal, a number) waits. The
// document's length says where what follows it starts.
func TestJSONSplit(t *testing.T) {
	for doc, want := range map[string]struct {
		n        int
		complete bool
	}{
		``:                         {0, false},
		"  \n":                     {0, false},
		`{`:                        {0, false},
		`{"memory":"51`:            {0, false},
		`{"cmd":["a","b\`:          {0, false},
		`{"network":tr`:            {0, false},
		`{"x":nul`:                 {0, false},
		`{"y":-1.`:                 {0, false},
		`{"y":-1.5e`:               {0, false},
		`{}`:                       {2, true},
		" {}\n":                    {3, true},
		`{"memory":"512M"}` + "\n": {17, true},
		`{"a" 1}`:                  {7, true}, // broken: more bytes cannot mend it
		`{"a":1x`:                  {7, true},
		`{}x`:                      {2, true}, // a second value follows
		`{} {`:                     {2, true},
		"{}\n{}\n":                 {2, true},
		`}`:                        {1, true},
	} {
		n, complete := jsonSplit([]byte(doc))
		if n != want.n || complete != want.complete {
			t.Errorf("jsonSplit(%q) = %d, %v; want %d, %v", doc, n, complete, want.n, want.complete)
		}
	}
}
