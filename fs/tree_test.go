package fs

import "testing"

// A config written in pieces is committed once it is whole, or once it
// is broken in a way more bytes cannot mend; a document cut short
// anywhere (inside a string, an escape, a literal, a number) waits.
func TestJSONComplete(t *testing.T) {
	for doc, want := range map[string]bool{
		``:                         false,
		"  \n":                     false,
		`{`:                        false,
		`{"memory":"51`:            false,
		`{"cmd":["a","b\`:          false,
		`{"network":tr`:            false,
		`{"x":nul`:                 false,
		`{"y":-1.`:                 false,
		`{"y":-1.5e`:               false,
		`{}`:                       true,
		`{"memory":"512M"}` + "\n": true,
		`{"a" 1}`:                  true, // broken: more bytes cannot mend it
		`{"a":1x`:                  true,
		`{}x`:                      true, // ParseConfig says what is wrong
		`{} {`:                     true,
		`}`:                        true,
	} {
		if got := jsonComplete([]byte(doc)); got != want {
			t.Errorf("jsonComplete(%q) = %v, want %v", doc, got, want)
		}
	}
}
