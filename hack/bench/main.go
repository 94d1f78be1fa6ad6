// Command bench holds the small helpers hack/bench.sh needs besides iperf3 and wrk:
//
//	bench http-server ADDR        a minimal HTTP back-end ("ok" to every request)
//	bench idle N ADDR             open N connections to ADDR and hold them until stdin closes
//	bench rss PID                 print a process's resident memory in KiB
//	bench udp-echo ADDR           a UDP server echoing every datagram
//	bench udp-relay LISTEN TARGET the naive Go UDP relay l4lb is measured against: one read, one
//	                              write a datagram, a connected socket and a goroutine per client
//	bench udp-load ADDR FLOWS SIZE SECONDS
//	                              send from FLOWS sockets, count echoed datagrams per second
//	bench sink ADDR               a TCP server that drops a PROXY header if one comes, then
//	                              discards everything
//	bench blast ADDR SECONDS      send 128 KiB writes to ADDR for SECONDS, print Gbit/s
//	bench synflood ADDR PREFIX RATE SECONDS
//	                              send RATE TCP SYNs a second to ADDR from random addresses of
//	                              PREFIX (a spoofed flood), print how many were sent
//	bench flowwatch VIP TAG       tell a successor of the flows of VIP as its holder does
//	                              (agent.FlowSync; TAG: the watched table's), until stdin
//	                              closes; print what it would have sent
//	bench ctflush                 empty the calling namespace's conntrack table (between
//	                              benchmark rounds, so each starts from the same table)
//	bench bpf-nat CLIENT-IF MEMBER-IF VIP:PORT=MEMBER:PORT...
//	                              the BPF ceiling the kernel path is measured against
//	                              (bpfnat.go), until SIGTERM
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/ti-mo/conntrack"
	"golang.org/x/net/ipv4"

	"github.com/l4lb/l4lb/test/synflood"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench http-server ADDR | idle N ADDR | rss PID")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "http-server":
		srv := &http.Server{Addr: os.Args[2], Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte("ok\n"))
		})}
		fmt.Fprintln(os.Stderr, srv.ListenAndServe())
		os.Exit(1)
	case "idle":
		n, _ := strconv.Atoi(os.Args[2])
		idle(n, os.Args[3])
	case "rss":
		fmt.Println(rss(os.Args[2]))
	case "udp-echo":
		udpEcho(os.Args[2])
	case "udp-relay":
		udpRelay(os.Args[2], os.Args[3])
	case "udp-load":
		flows, _ := strconv.Atoi(os.Args[3])
		size, _ := strconv.Atoi(os.Args[4])
		secs, _ := strconv.Atoi(os.Args[5])
		udpLoad(os.Args[2], flows, size, time.Duration(secs)*time.Second)
	case "sink":
		sink(os.Args[2])
	case "blast":
		secs, _ := strconv.Atoi(os.Args[3])
		blast(os.Args[2], time.Duration(secs)*time.Second)
	case "flowwatch":
		flowWatch(os.Args[2], parseTag(os.Args[3]))
	case "ctflush":
		c, err := conntrack.Dial(nil)
		if err == nil {
			err = c.Flush()
			c.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "ctflush:", err)
			os.Exit(1)
		}
	case "bpf-nat":
		bpfNAT(os.Args[2], os.Args[3], os.Args[4:])
	case "synflood":
		rate, _ := strconv.Atoi(os.Args[4])
		secs, _ := strconv.Atoi(os.Args[5])
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
		defer cancel()
		sent, err := synflood.Send(ctx, netip.MustParseAddrPort(os.Args[2]), netip.MustParsePrefix(os.Args[3]), rate)
		if err != nil {
			fmt.Fprintln(os.Stderr, "synflood:", err)
			os.Exit(1)
		}
		fmt.Println(sent)
	}
}

// udpEcho answers every datagram, reading and writing in batches, so the echo server is not
// what limits a UDP measurement.
func udpEcho(addr string) {
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The echo server is not under test: a large buffer keeps it from dropping what the
	// relays deliver in bursts (rmem_max caps it; 4 MiB on these machines).
	c.(*net.UDPConn).SetReadBuffer(4 << 20)
	pc := ipv4.NewPacketConn(c)
	msgs := batch(64)
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			return
		}
		for i := range msgs[:n] {
			msgs[i].Buffers[0] = msgs[i].Buffers[0][:msgs[i].N]
		}
		pc.WriteBatch(msgs[:n], 0)
		for i := range msgs[:n] {
			msgs[i].Buffers[0] = msgs[i].Buffers[0][:cap(msgs[i].Buffers[0])]
		}
	}
}

func batch(n int) []ipv4.Message {
	msgs := make([]ipv4.Message, n)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 65536)}
	}
	return msgs
}

func udpRelay(listen, target string) {
	ln, err := net.ListenUDP("udp", mustUDP(listen))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	up := mustUDP(target)
	sessions := map[string]*net.UDPConn{}
	buf := make([]byte, 65536)
	for {
		n, from, err := ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		c := sessions[from.String()]
		if c == nil {
			if c, err = net.DialUDP("udp", nil, up); err != nil {
				continue
			}
			sessions[from.String()] = c
			go func(c *net.UDPConn, from *net.UDPAddr) {
				b := make([]byte, 65536)
				for {
					n, err := c.Read(b)
					if err != nil {
						return
					}
					ln.WriteToUDP(b[:n], from)
				}
			}(c, from)
		}
		c.Write(buf[:n])
	}
}

func mustUDP(s string) *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return a
}

// udpLoad keeps a window of datagrams in flight per flow and prints echoed datagrams/s. It
// sends and reads in batches, so the load generator is not what limits the measurement.
func udpLoad(addr string, flows, size int, d time.Duration) {
	var total atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range flows {
		c, err := net.DialUDP("udp", nil, mustUDP(addr))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			pc := ipv4.NewPacketConn(c)
			const window = 16
			out := make([]ipv4.Message, window)
			msg := make([]byte, size)
			for i := range out {
				out[i].Buffers = [][]byte{msg}
			}
			in := batch(window)
			pc.WriteBatch(out, 0)
			for time.Now().Before(end) {
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, err := pc.ReadBatch(in, 0)
				if err != nil {
					n = window / 2 // lost: send more so the window stays full
				} else {
					total.Add(int64(n))
				}
				pc.WriteBatch(out[:n], 0) // one out for each back
			}
		}()
	}
	wg.Wait()
	fmt.Printf("%.0f\n", float64(total.Load())/d.Seconds())
}

func idle(n int, addr string) {
	conns := make([]net.Conn, 0, n)
	for len(conns) < n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		conns = append(conns, c)
	}
	fmt.Println("open", len(conns))
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

func rss(pid string) int {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(v)[0])
			return kb
		}
	}
	return -1
}

// sink accepts connections, reads a PROXY header (v1 or v2) if the connection starts with
// one, and discards the rest.
func sink(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReaderSize(c, 256<<10)
			if sig, err := r.Peek(5); err == nil && (string(sig) == "PROXY" || sig[0] == 0x0d) {
				if _, err := proxyproto.Read(r); err != nil {
					return
				}
			}
			io.Copy(io.Discard, r)
		}()
	}
}

// blast writes 128 KiB at a time to addr for d and prints the rate in Gbit/s.
func blast(addr string, d time.Duration) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		w, err := c.Write(buf)
		n += int64(w)
		if err != nil {
			break
		}
	}
	fmt.Printf("%.2f\n", float64(n)*8/time.Since(start).Seconds()/1e9)
}
