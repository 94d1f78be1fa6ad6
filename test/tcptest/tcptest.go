// Package tcptest holds the TCP back-ends tests run against: a server on a free port that
// hands each connection to a function, and the usual one that answers with its name.
package tcptest

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// Backend is a TCP server that runs Handle on each connection it accepts, in a goroutine of
// its own, and closes the connection after. It stops when the test ends.
type Backend struct {
	Name string
	// Addr is where it listens; Restart listens there again.
	Addr netip.AddrPort
	// Hits counts accepted connections.
	Hits   atomic.Int64
	handle func(net.Conn)
	t      testing.TB

	mu sync.Mutex
	ln net.Listener
}

// Serve listens on addr ("127.0.0.1:0" for a free loopback port) and runs handle on each
// connection.
func Serve(t testing.TB, addr string, handle func(net.Conn)) *Backend {
	t.Helper()
	b := &Backend{handle: handle, t: t}
	if err := b.listen(addr); err != nil {
		t.Fatal(err)
	}
	return b
}

// Named answers each connection with name and closes it, so a client sees which member
// answered.
func Named(t testing.TB, name string) *Backend {
	t.Helper()
	b := Serve(t, "127.0.0.1:0", func(c net.Conn) { c.Write([]byte(name)) })
	b.Name = name
	return b
}

// Port is the port it listens on.
func (b *Backend) Port() int32 { return int32(b.Addr.Port()) }

// Stop closes the listener: new connections are refused.
func (b *Backend) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ln.Close()
}

// Restart listens again on the same address after Stop.
func (b *Backend) Restart(t testing.TB) {
	t.Helper()
	if err := b.Relisten(); err != nil {
		t.Fatal(err)
	}
}

// Relisten is Restart for a goroutine other than the test's: the port may briefly be taken.
func (b *Backend) Relisten() error { return b.listen(b.Addr.String()) }

func (b *Backend) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.ln = ln
	b.mu.Unlock()
	if !b.Addr.IsValid() {
		// Set once, before the Backend is shared: Relisten uses the same address, and tests
		// read Addr from other goroutines without a lock.
		b.Addr = ln.Addr().(*net.TCPAddr).AddrPort()
	}
	b.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.Hits.Add(1)
			go func() {
				defer c.Close()
				b.handle(c)
			}()
		}
	}()
	return nil
}
