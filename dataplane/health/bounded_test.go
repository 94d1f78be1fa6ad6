package health

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/l4lb/l4lb/internal/model"
)

// TestHTTPCheckReadsABoundedAnswer: a member that streams headers for ever fails its check
// once maxResponse bytes are read, long before the timeout, and is read no further.
func TestHTTPCheckReadsABoundedAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var sent atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Read(make([]byte, 512))
				line := []byte("HTTP/1.1 200 OK\r\n")
				for {
					n, err := c.Write(line)
					sent.Add(int64(n))
					if err != nil {
						return
					}
					line = []byte("X-Flood: " + strings.Repeat("a", 1000) + "\r\n")
				}
			}()
		}
	}()
	err = check(t, httpMonitor(model.MonitorHTTP, "200"), addrOf(t, ln.Addr()))
	if err == nil {
		t.Fatal("an endless answer passed the check")
	}
	// Stopped by the bound (the reader's end), not by the check's timeout.
	if !strings.Contains(err.Error(), "at most") || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the check did not stop at the bound: %v", err)
	}
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzReadStatus: whatever a member answers, reading its status never panics and never reads
// more than maxResponse bytes.
func FuzzReadStatus(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	f.Add([]byte("HTTP/1.0 503 Service Unavailable\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n"))
	f.Add(bytes.Repeat([]byte("HTTP/1.1 200 OK\r\n"), 2000))
	f.Fuzz(func(t *testing.T, answer []byte) {
		r := &countingReader{r: bytes.NewReader(answer)}
		code, err := readStatus(r, "GET")
		if r.n > maxResponse {
			t.Fatalf("read %d bytes, more than %d", r.n, maxResponse)
		}
		if err == nil && (code < 0 || code > 999) {
			t.Fatalf("status %d from %q", code, answer)
		}
	})
}
