// Command bench holds the small helpers hack/bench.sh needs besides iperf3 and wrk:
//
//	bench http-server ADDR        a minimal HTTP back-end ("ok" to every request)
//	bench idle N ADDR             open N connections to ADDR and hold them until stdin closes
//	bench rss PID                 print a process's resident memory in KiB
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 3 {
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
	}
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
