package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// bpfNAT is the BPF alternative to the kernel path's nftables translation, at its cheapest,
// so issue 29's choice between the two is made on a measured ceiling: the way Cilium and
// Katran forward, in tc programs loaded with cilium/ebpf, each packet translated without a
// flow table and sent out of the other interface by bpf_redirect_neigh, past netfilter and
// conntrack. A packet to a VIP:PORT of rules goes to its MEMBER:PORT out of memberIf; one
// from MEMBER:PORT goes back as from VIP:PORT out of clientIf. None of a load balancer's
// semantics (several members, their weights and health, a flow table that keeps a flow's
// member when they change, statistics, a hand-off): each would add to the cost measured
// here, never take from it. The programs stay attached until SIGTERM or SIGINT.
func bpfNAT(clientIf, memberIf string, rules []string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "bpf-nat:", err)
		os.Exit(1)
	}
	cif, err := net.InterfaceByName(clientIf)
	if err != nil {
		fail(err)
	}
	mif, err := net.InterfaceByName(memberIf)
	if err != nil {
		fail(err)
	}
	forward, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 12, MaxEntries: 64})
	if err != nil {
		fail(err)
	}
	back, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 12, MaxEntries: 64})
	if err != nil {
		fail(err)
	}
	for _, r := range rules {
		vip, member, ok := strings.Cut(r, "=")
		if !ok {
			fail(fmt.Errorf("%q: want VIP:PORT=MEMBER:PORT", r))
		}
		v, m := netip.MustParseAddrPort(vip), netip.MustParseAddrPort(member)
		if err := forward.Put(natKey(v), natValue(m, mif.Index)); err != nil {
			fail(err)
		}
		if err := back.Put(natKey(m), natValue(v, cif.Index)); err != nil {
			fail(err)
		}
	}
	// The destination is rewritten on the way in (IPv4 offset 16, TCP offset 2 from their
	// headers), the source on the way back (12 and 0).
	for _, p := range []struct {
		iface            *net.Interface
		m                *ebpf.Map
		addrOff, portOff int16
		name             string
	}{{cif, forward, 16, 2, "l4lb_bench_in"}, {mif, back, 12, 0, "l4lb_bench_out"}} {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: p.name, Type: ebpf.SchedCLS,
			Instructions: natProgram(p.m, p.addrOff, p.portOff), License: "Apache-2.0"})
		if err != nil {
			fail(err)
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: p.iface.Index, Program: prog, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			fail(err)
		}
		defer l.Close()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// natKey is a map key: an address and a port as they are on the wire, two bytes of padding.
func natKey(ap netip.AddrPort) []byte {
	k := make([]byte, 8)
	a := ap.Addr().As4()
	copy(k, a[:])
	binary.BigEndian.PutUint16(k[4:], ap.Port())
	return k
}

// natValue is a map value: the address and port to write, as on the wire, and the interface
// to send the packet out of, in host order.
func natValue(ap netip.AddrPort, ifindex int) []byte {
	v := make([]byte, 12)
	copy(v, natKey(ap))
	binary.NativeEndian.PutUint32(v[8:], uint32(ifindex))
	return v
}

// natProgram looks up the IPv4 TCP packet's address and port at addrOff and portOff (from the
// IP and TCP headers; no IP options) in m and, where found, writes the value's address and
// port there, updates both checksums and redirects the packet; any other packet passes on.
func natProgram(m *ebpf.Map, addrOff, portOff int16) asm.Instructions {
	const (
		eth, ipHdr   = 14, 20
		ipCsum       = eth + 10
		tcpCsum      = eth + ipHdr + 16
		skbData      = 76 // offsetof(struct __sk_buff, data)
		skbDataEnd   = 80
		pseudoHeader = 0x10 // BPF_F_PSEUDO_HDR
	)
	addr, port := eth+addrOff, eth+ipHdr+portOff
	lookup := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, eth+ipHdr+20),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half), // EtherType, IPv4
		asm.JNE.Imm(asm.R5, 0x0008, "pass"),
		asm.LoadMem(asm.R5, asm.R2, eth, asm.Byte), // version 4, header of 5 words
		asm.JNE.Imm(asm.R5, 0x45, "pass"),
		asm.LoadMem(asm.R5, asm.R2, eth+9, asm.Byte), // TCP
		asm.JNE.Imm(asm.R5, 6, "pass"),
		// The key on the stack: fp-8 the address, fp-4 the port and its padding.
		asm.LoadMem(asm.R5, asm.R2, addr, asm.Word),
		asm.StoreMem(asm.RFP, -8, asm.R5, asm.Word),
		asm.LoadMem(asm.R5, asm.R2, port, asm.Half),
		asm.StoreMem(asm.RFP, -4, asm.R5, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R7, asm.R0),
	}
	// The checksums first, from the old and new values: the IP header's for the address,
	// TCP's for the address (in its pseudo header) and for the port.
	var csums asm.Instructions
	for _, c := range []struct {
		fn       asm.BuiltinFunc
		at       int32
		old, new int16 // the old value's place on the stack, the new one's in the map value
		size     asm.Size
		flags    int32
	}{
		{asm.FnL3CsumReplace, ipCsum, -8, 0, asm.Word, 4},
		{asm.FnL4CsumReplace, tcpCsum, -8, 0, asm.Word, pseudoHeader | 4},
		{asm.FnL4CsumReplace, tcpCsum, -4, 4, asm.Half, 2},
	} {
		csums = append(csums,
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, c.at),
			asm.LoadMem(asm.R3, asm.RFP, c.old, asm.Word),
			asm.LoadMem(asm.R4, asm.R7, c.new, c.size),
			asm.Mov.Imm(asm.R5, c.flags),
			c.fn.Call())
	}
	rewrite := asm.Instructions{
		// bpf_skb_store_bytes(skb, addr, value, 4, 0), then the port.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, int32(addr)),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Mov.Imm(asm.R4, 4),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbStoreBytes.Call(),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, int32(port)),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Add.Imm(asm.R3, 4),
		asm.Mov.Imm(asm.R4, 2),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbStoreBytes.Call(),
		// bpf_redirect_neigh(ifindex, NULL, 0, 0): the next hop's address from the FIB and
		// the neighbour table, out of the value's interface.
		asm.LoadMem(asm.R1, asm.R7, 8, asm.Word),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRedirectNeigh.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("pass"), // TCX_PASS
		asm.Return(),
	}
	return slices.Concat(lookup, csums, rewrite)
}
