package lantest

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Host is a network namespace on a test's LAN (a bridge in a namespace of its own).
type Host struct {
	NS   string
	Addr string // on eth0, /24
}

// Topology is a LAN and its hosts, by name.
type Topology struct {
	Hosts map[string]*Host
	lan   string
}

// Sh runs a command and fails the test with its output when it fails.
func Sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

// NewTopology makes the LAN and hosts (name -> address); everything is deleted at cleanup.
// The namespaces are named after the process (its whole ID: make test runs packages side by
// side), so parallel test binaries do not collide.
func NewTopology(t testing.TB, hosts map[string]string) *Topology {
	prefix := fmt.Sprintf("l4f%d", os.Getpid())
	tp := &Topology{lan: prefix + "-lan", Hosts: map[string]*Host{}}
	t.Cleanup(func() {
		for _, h := range tp.Hosts {
			exec.Command("ip", "netns", "del", h.NS).Run()
		}
		exec.Command("ip", "netns", "del", tp.lan).Run()
	})
	Sh(t, "ip", "netns", "add", tp.lan)
	Sh(t, "ip", "-n", tp.lan, "link", "add", "br0", "type", "bridge")
	Sh(t, "ip", "-n", tp.lan, "link", "set", "br0", "up")
	i := 0
	for name, addr := range hosts {
		i++
		h := &Host{NS: prefix + "-" + name, Addr: addr}
		tp.Hosts[name] = h
		Sh(t, "ip", "netns", "add", h.NS)
		peer := fmt.Sprintf("v%d", i)
		Sh(t, "ip", "-n", tp.lan, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
		Sh(t, "ip", "-n", tp.lan, "link", "set", peer, "master", "br0", "up")
		Sh(t, "ip", "-n", h.NS, "addr", "add", addr+"/24", "dev", "eth0")
		Sh(t, "ip", "-n", h.NS, "link", "set", "eth0", "up")
		Sh(t, "ip", "-n", h.NS, "link", "set", "lo", "up")
	}
	return tp
}

// In runs f with the calling thread inside the host's namespace.
func (h *Host) In(f func() error) error { return In(h.NS, f) }

// MAC of the host's eth0.
func (h *Host) MAC(t testing.TB) string {
	out := Sh(t, "ip", "-n", h.NS, "-o", "link", "show", "eth0")
	f := strings.Fields(out[strings.Index(out, "link/ether"):])
	return f[1]
}

// Has reports whether addr is on one of the host's interfaces.
func (h *Host) Has(addr string) bool {
	out, _ := exec.Command("ip", "-n", h.NS, "-o", "addr", "show").Output()
	return strings.Contains(string(out), " "+addr+"/")
}

// Arping asks the LAN from h who has addr and returns the MACs that answered within wait.
func (h *Host) Arping(addr string, wait time.Duration) ([]string, error) {
	return WhoHas(h.NS, "eth0", addr, wait)
}

// Neighbour is the MAC the host's neighbour table has for addr ("" when none).
func (h *Host) Neighbour(addr string) string {
	out, _ := exec.Command("ip", "-n", h.NS, "neigh", "show", addr).Output()
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// Fetch connects from the host to addr and returns what was answered until the peer closed.
func (h *Host) Fetch(addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := h.In(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	if len(b) == 0 && err == nil {
		err = fmt.Errorf("closed without an answer")
	}
	return string(b), err
}

// Forwarder relays TCP connections to a service of the test's own namespace (the API server,
// Keystone, on loopback); Cut severs it, as a partition would.
type Forwarder struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	Delay atomic.Int64 // nanoseconds added to every chunk each way, to play a slow server
}

// Forward starts a Forwarder from port inside h to target; it is cut at cleanup.
func Forward(t testing.TB, h *Host, port int, target string) *Forwarder {
	var ln net.Listener
	if err := h.In(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return relay(t, ln, target)
}

// Relay starts a Forwarder from addr, in the test's own namespace, to target: a service on
// the test's loopback made reachable from a network the test linked to it.
func Relay(t testing.TB, addr, target string) *Forwarder {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return relay(t, ln, target)
}

func relay(t testing.TB, ln net.Listener, target string) *Forwarder {
	f := &Forwarder{ln: ln}
	go func() {
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				fmt.Fprintln(os.Stderr, "forwarder:", err)
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			go func() { f.copy(up, c); up.Close() }()
			go func() { f.copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(f.Cut)
	return f
}

func (f *Forwarder) copy(dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			time.Sleep(time.Duration(f.Delay.Load()))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Cut closes the listener and every connection through it.
func (f *Forwarder) Cut() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}
