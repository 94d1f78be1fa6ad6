// Package synflood sends a SYN flood as one from spoofed sources looks: SYNs from random
// addresses and ports of a prefix, at a rate, that nobody answers the SYN-ACKs of. For tests
// and benchmarks on network-namespace hosts: it needs CAP_NET_RAW.
package synflood

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Send sends SYNs to target at rate per second, each from a random address of from and a
// random port below Linux's ephemeral ports (32768-60999), from the calling thread's network
// namespace, until ctx ends; it returns how many it sent. The ports stay clear of a test
// client's: the kernel path keeps a client's port towards the member, and a member keeps a
// flood SYN's half-open connection for about a minute, which a client's SYN from the same
// port would meet (docs/architecture.md, "SYN cookies").
//
// A flooder stands for machines elsewhere, but a test's runs on the cores it measures, so it
// spends as little as it can: it wakes every 10 ms, not each millisecond (on a virtual
// machine each wake-up costs the scheduler's switches), sends each wake-up's SYNs in
// sendmmsg(2) calls of 64, and numbers their IP headers itself (the kernel would draw each
// a random ID).
func Send(ctx context.Context, target netip.AddrPort, from netip.Prefix, rate int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW) // IP_HDRINCL implied
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	// Connected, each message needs no address of its own.
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: target.Addr().As4()}); err != nil {
		return 0, err
	}
	const batch = 64
	var pkts [batch][40]byte
	var iovs [batch]unix.Iovec
	var msgs [batch]unix.Mmsghdr
	for i := range msgs {
		iovs[i].Base = &pkts[i][0]
		iovs[i].SetLen(len(pkts[i]))
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
	}
	base := binary.BigEndian.Uint32(from.Masked().Addr().AsSlice())
	span := uint32(1) << (32 - from.Bits())
	dst := binary.BigEndian.Uint32(target.Addr().AsSlice())
	const tick = 10 * time.Millisecond
	start, sent := time.Now(), 0
	for next := start; ctx.Err() == nil; next = next.Add(tick) {
		want := int(float64(rate) * time.Since(start).Seconds())
		for sent < want {
			n := min(want-sent, batch)
			for i := range n {
				synPacket(pkts[i][:], base+rand.Uint32N(span), dst, uint16(1024+rand.IntN(32768-1024)), target.Port())
			}
			done, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(n), 0, 0, 0)
			if errno != 0 {
				return sent, errno
			}
			sent += int(done)
		}
		time.Sleep(time.Until(next))
	}
	return sent, nil
}

// synPacket writes an IPv4 header and a TCP SYN (no options) into b (40 bytes).
func synPacket(b []byte, src, dst uint32, sport, dport uint16) {
	clear(b)
	b[0], b[8], b[9] = 0x45, 64, unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(b[2:], 40)
	binary.BigEndian.PutUint16(b[4:], uint16(rand.Uint32())|1) // the ID: 0 asks the kernel for one
	binary.BigEndian.PutUint32(b[12:], src)
	binary.BigEndian.PutUint32(b[16:], dst)
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20], 0))
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], rand.Uint32())
	t[12], t[13] = 5<<4, 0x02 // data offset 5 words; SYN
	binary.BigEndian.PutUint16(t[14:], 64240)
	// The pseudo-header: addresses, protocol, TCP length.
	pseudo := src>>16 + src&0xffff + dst>>16 + dst&0xffff + unix.IPPROTO_TCP + 20
	binary.BigEndian.PutUint16(t[16:], checksum(t, pseudo))
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
