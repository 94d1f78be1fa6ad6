package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Watch calls fn with each flow of the table as it starts (ended false) and as it ends, from
// its own goroutine, until stop is called or the kernel's events fail (done then receives the
// error; nil after stop). Events the kernel cannot queue for us (a burst beyond the socket's
// buffer) are lost, not reported: Flows, read now and then, makes up for them. The events are
// those of the caller's network namespace. A connection the SYN proxy set up is told of
// without its shift (the event comes before the member answers): Reread it.
//
// The kernel sends every conntrack event of the namespace (it cannot filter them by mark), so
// each is read here with no more work than finding its mark, by blocking reads of a socket
// of our own: read through Go's poller by the netlink libraries (a wake-up and two system
// calls per event), they cost a holder several times the CPU (docs/benchmarks.md,
// "Connections across a VIP move").
func (t *Table) Watch(fn func(f Flow, ended bool)) (stop func(), done <-chan error, err error) {
	fd, err := netfilterSocket(8 << 20) // as large as the node allows: fewer lost in a burst
	if err != nil {
		return nil, nil, fmt.Errorf("conntrack events: %w", err)
	}
	groups := uint32(1<<(unix.NFNLGRP_CONNTRACK_NEW-1) | 1<<(unix.NFNLGRP_CONNTRACK_DESTROY-1))
	for _, o := range []func() error{
		func() error { return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}) },
		func() error { return unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1) },
		// A wake-up now and then to see whether stop was called (a blocked read is not
		// ended by closing its socket).
		func() error {
			return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
		},
	} {
		if err := o(); err != nil {
			unix.Close(fd)
			return nil, nil, fmt.Errorf("conntrack events: %w", err)
		}
	}
	var stopped atomic.Bool
	out := make(chan error, 1)
	go func() {
		// Blocking reads on a thread of their own, one event each: Go's poller (and the
		// netlink library's peek before each read) cost more than the event itself
		// (docs/benchmarks.md).
		defer unix.Close(fd)
		buf := make([]byte, 64<<10)
		for !stopped.Load() {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			switch {
			case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				out <- fmt.Errorf("conntrack events: %w", err)
				return
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				continue
			}
			for _, m := range msgs {
				if f, ended, ok := t.event(m.Header.Type, m.Data); ok {
					fn(f, ended)
				}
			}
		}
		out <- nil
	}()
	return func() { stopped.Store(true) }, out, nil
}

// netfilterSocket opens a netlink socket to netfilter that receives up to rcvbuf bytes
// before the kernel drops what it sends (capped by net.core.rmem_max without CAP_NET_ADMIN).
func netfilterSocket(rcvbuf int) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return -1, err
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	return fd, nil
}

// event reads a conntrack event: a flow of this table starting or ending, or ok false.
func (t *Table) event(typ uint16, data []byte) (f Flow, ended bool, ok bool) {
	switch typ & 0xff { // the subsystem is in the high byte
	case ctNew:
	case ctDelete:
		ended = true
	default:
		return f, false, false
	}
	if len(data) < 4 { // struct nfgenmsg
		return f, false, false
	}
	attrs := data[4:]
	if mark := attribute(attrs, ctaMark); len(mark) != 4 || binary.BigEndian.Uint32(mark)&markMask != t.tag {
		return f, false, false
	}
	f, ok = flowFrom(attrs)
	return f, ended, ok
}

// attributes yields the netlink attributes in b: their type (flags cleared) and value.
func attributes(b []byte) func(yield func(uint16, []byte) bool) {
	return func(yield func(uint16, []byte) bool) {
		for len(b) >= 4 {
			n := int(binary.NativeEndian.Uint16(b))
			if n < 4 || n > len(b) {
				return
			}
			if !yield(binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[4:n]) {
				return
			}
			b = b[min(len(b), (n+3)&^3):]
		}
	}
}

var errTuple = errors.New("conntrack event: no tuple")

// parseTuple reads a CTA_TUPLE_*: protocol, source and destination.
func parseTuple(b []byte) (proto uint8, src, dst netip.AddrPort, err error) {
	var sa, da netip.Addr
	var sp, dp uint16
	for typ, v := range attributes(b) {
		switch typ {
		case ctaTupleIP:
			for typ, v := range attributes(v) {
				switch typ {
				case ctaIPv4Src, ctaIPv6Src:
					sa, _ = netip.AddrFromSlice(v)
				case ctaIPv4Dst, ctaIPv6Dst:
					da, _ = netip.AddrFromSlice(v)
				}
			}
		case ctaTupleProto:
			for typ, v := range attributes(v) {
				switch {
				case typ == ctaProtoNum && len(v) == 1:
					proto = v[0]
				case typ == ctaProtoSrc && len(v) == 2:
					sp = binary.BigEndian.Uint16(v)
				case typ == ctaProtoDst && len(v) == 2:
					dp = binary.BigEndian.Uint16(v)
				}
			}
		}
	}
	if !sa.IsValid() || !da.IsValid() {
		return 0, src, dst, errTuple
	}
	return proto, netip.AddrPortFrom(sa.Unmap(), sp), netip.AddrPortFrom(da.Unmap(), dp), nil
}
