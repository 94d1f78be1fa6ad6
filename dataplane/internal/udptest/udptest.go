// Package udptest holds the UDP servers the dataplane's tests send to.
package udptest

import (
	"net"
	"net/netip"
	"testing"
)

// Echo serves on a free loopback port until the test ends, answering every datagram with
// name, a colon and the payload, so a test sees which member answered.
func Echo(t testing.TB, name string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
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
