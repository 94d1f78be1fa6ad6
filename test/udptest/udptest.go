// Package udptest holds what the dataplane's UDP tests run against: echo servers, and a
// kernel-path table of their own.
package udptest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"github.com/l4lb/l4lb/dataplane/nat"
)

// Echo serves on a free loopback port until the test ends, answering every datagram with
// name, a colon and the payload, so a test sees which member answered.
func Echo(t testing.TB, name string) netip.AddrPort { return EchoAt(t, "127.0.0.1", name) }

// EchoAt is Echo on a free port of ip, in the network namespace of the calling thread.
func EchoAt(t testing.TB, ip, name string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// KernelTable opens an nftables table of the test's own for the kernel path, removed with
// the test. Test binaries run at once, so each package passes its own tag. It skips the test
// where nftables cannot be programmed (no CAP_NET_ADMIN).
func KernelTable(t testing.TB, tag uint8) *nat.Table {
	t.Helper()
	tb, err := nat.Open(fmt.Sprintf("l4lb-test-%d", os.Getpid()), tag)
	if errors.Is(err, syscall.EPERM) {
		t.Skip("needs CAP_NET_ADMIN to program nftables (run as root)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Error(err)
		}
	})
	return tb
}

// HeldPort is a UDP address on ip whose port stays bound until the test ends. The kernel
// path binds nothing, so without it another test binary could be given the same port.
func HeldPort(t testing.TB, ip string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}
