// Command seedapp answers as the seed's Flask app (hack/backend/app.py) does, for members run
// as pods from an image built here (no Python in a distroless image): `/` answers
// "Server : <hostname> @ <ip>", `/health` answers "healthy!", on the -p port.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

func main() {
	port := flag.String("p", "8080", "port for the web server to bind to")
	udp := flag.String("u", "", "also answer UDP datagrams on this port, with the same line (a UDP member)")
	flag.Parse()
	host, _ := os.Hostname()
	if *udp != "" {
		pc, err := net.ListenPacket("udp", ":"+*udp)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			buf := make([]byte, 2048)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					continue
				}
				pc.WriteTo([]byte("Server : "+host+"\n"), from)
			}
		}()
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		ip, _, _ := net.SplitHostPort(r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
		fmt.Fprintf(w, "Server : %s @ %s\n", host, strings.Trim(ip, "[]"))
	})
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "healthy!") })
	if err := http.ListenAndServe(":"+*port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
