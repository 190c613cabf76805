package jobs

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadChunk(t *testing.T) {
	cut := errors.New("cut")
	tests := []struct {
		name    string
		r       io.Reader
		size    int
		wantN   int
		wantEOF bool
		wantErr error
	}{
		{"fills the buffer", strings.NewReader("abcdef"), 4, 4, false, nil},
		{"clean end inside", strings.NewReader("ab"), 4, 2, true, nil},
		{"clean end at once", strings.NewReader(""), 4, 0, true, nil},
		{"one byte at a time", iotest.OneByteReader(strings.NewReader("abc")), 8, 3, true, nil},
		{"data with EOF", iotest.DataErrReader(strings.NewReader("abc")), 8, 3, true, nil},
		{"truncated part", io.MultiReader(strings.NewReader("ab"), iotest.ErrReader(io.ErrUnexpectedEOF)), 8, 2, false, io.ErrUnexpectedEOF},
		{"other error", io.MultiReader(strings.NewReader("ab"), iotest.ErrReader(cut)), 8, 2, false, cut},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, eof, err := ReadChunk(tc.r, make([]byte, tc.size))
			if n != tc.wantN || eof != tc.wantEOF || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("ReadChunk = %d, %v, %v; want %d, %v, %v", n, eof, err, tc.wantN, tc.wantEOF, tc.wantErr)
			}
		})
	}
}
