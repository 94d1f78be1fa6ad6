package proxy

import (
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The loop's system calls never block (non-blocking sockets, close without lingering) or
// block for replyWait at most (epoll_wait), so they are made without telling the scheduler:
// entering and leaving a blocking system call costs more than most of these calls do, and a
// slow write on loopback makes the runtime hand the loop's processor to another thread
// (sysmon's threshold) and wake one back. golang.org/x/sys/unix has no such variants, hence these.

func errnoErr(e unix.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

func ptr[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }

func bytesPtr(p []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(p))) }

// readNow reads from a socket with recvfrom, which goes to the socket directly where read
// passes through the file layer first (its cost: docs/benchmarks.md, "Design choices measured").
func readNow(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), bytesPtr(p), uintptr(len(p)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func writeNow(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), bytesPtr(p), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// sendNow writes with send flags: MSG_MORE holds a segment back until the next write or the
// FIN, so the last bytes and the FIN leave as one segment.
func sendNow(fd int, p []byte, flags int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), bytesPtr(p), uintptr(len(p)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func spliceNow(from, to, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(from), 0, uintptr(to), 0, uintptr(n), unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func epollNow(ep int, events []unix.EpollEvent) (int, error) {
	return epollWaitNow(ep, events, 0)
}

// epollWaitNow waits up to ms milliseconds; a signal to the thread ends it early (EINTR).
func epollWaitNow(ep int, events []unix.EpollEvent, ms int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), uintptr(ms), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// socketDropsNow is how many packets the kernel dropped for the socket, nearly all on a full
// receive queue: SO_MEMINFO's SK_MEMINFO_DROPS (which x/sys does not name), as in the drops
// column of /proc/net/udp.
func socketDropsNow(fd int) uint32 {
	var info [9]uint32 // SK_MEMINFO_VARS
	size := uint32(unsafe.Sizeof(info))
	if _, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO, ptr(&info), ptr(&size), 0); e != 0 {
		return 0
	}
	return info[8] // SK_MEMINFO_DROPS
}

func epollCtlNow(ep, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(ep), uintptr(op), uintptr(fd), ptr(ev), 0, 0)
	return errnoErr(e)
}

func closeNow(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

func shutdownNow(fd, how int) {
	unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
}

func setIntNow(fd, level, opt, v int) error {
	x := int32(v)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), ptr(&x), 4, 0)
	return errnoErr(e)
}

func socketErrorNow(fd int) error {
	var v int32
	l := uint32(4)
	if _, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR, ptr(&v), ptr(&l), 0); e != 0 {
		return e
	}
	return errnoErr(unix.Errno(v))
}

// resetNow closes a socket with a reset (SO_LINGER with a zero timeout), so the peer learns
// at once instead of waiting.
func resetNow(fd int) {
	l := unix.Linger{Onoff: 1}
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER, ptr(&l), unsafe.Sizeof(l), 0)
	closeNow(fd)
}

// acceptNow accepts a connection as a non-blocking socket, with the client's address.
func acceptNow(fd int) (int, netip.AddrPort, error) {
	var sa unix.RawSockaddrAny
	l := uint32(unix.SizeofSockaddrAny)
	nfd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), ptr(&sa), ptr(&l), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(nfd), rawAddrPort(&sa), nil
}

// socketNow opens a non-blocking socket of kind (SOCK_STREAM, SOCK_DGRAM) and starts
// connecting it to a member, a stream with the given congestion control (nil: the host's).
func socketNow(kind int, to netip.AddrPort, congestion []byte) (int, error) {
	var sa unix.RawSockaddrAny
	l := rawSockaddr(to, &sa)
	family := unix.AF_INET
	if sa.Addr.Family == unix.AF_INET6 {
		family = unix.AF_INET6
	}
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), uintptr(kind|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC), 0)
	if e != 0 {
		return -1, e
	}
	if kind == unix.SOCK_STREAM {
		setIntNow(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if len(congestion) > 0 { // known to the kernel: New checked it
			unix.RawSyscall6(unix.SYS_SETSOCKOPT, fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, bytesPtr(congestion), uintptr(len(congestion)), 0)
		}
	}
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, fd, ptr(&sa), uintptr(l)); e != 0 && e != unix.EINPROGRESS {
		closeNow(int(fd))
		return -1, e
	}
	return int(fd), nil
}

// rawSockaddr writes an address as the kernel takes it and returns its length.
func rawSockaddr(to netip.AddrPort, sa *unix.RawSockaddrAny) uint32 {
	port := to.Port()
	if to.Addr().Is4() || to.Addr().Is4In6() {
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		in.Family, in.Addr = unix.AF_INET, to.Addr().Unmap().As4()
		in.Port = port<<8 | port>>8 // network byte order
		return unix.SizeofSockaddrInet4
	}
	in := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
	in.Family, in.Addr = unix.AF_INET6, to.Addr().As16()
	in.Port = port<<8 | port>>8
	return unix.SizeofSockaddrInet6
}

func rawAddrPort(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), in.Port<<8|in.Port>>8)
	case unix.AF_INET6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom16(in.Addr).Unmap(), in.Port<<8|in.Port>>8)
	}
	return netip.AddrPort{}
}

// congestionAvailable tells whether sockets can be given the TCP congestion control name
// (a kernel without its module, or one that keeps it to privileged processes, refuses).
func congestionAvailable(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	return os.NewSyscallError("setsockopt TCP_CONGESTION", unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, name))
}
