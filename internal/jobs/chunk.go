package jobs

import (
	"errors"
	"io"
)

// ReadChunk fills buf from r for a store's CreateFile: it returns the bytes
// read, with eof set once r has ended cleanly (io.EOF). Any other error,
// io.ErrUnexpectedEOF included (a multipart file part cut before its
// closing boundary says that), is returned: a truncated upload must fail,
// not be stored as a complete file. (io.ReadFull would turn a clean end
// inside buf into io.ErrUnexpectedEOF too, and hide the difference.)
func ReadChunk(r io.Reader, buf []byte) (n int, eof bool, err error) {
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		switch {
		case errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
			return n, true, nil
		case err != nil:
			return n, false, err
		}
	}
	return n, false, nil
}
