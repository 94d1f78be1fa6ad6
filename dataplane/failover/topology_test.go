package failover

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

	"github.com/l4lb/l4lb/dataplane/internal/lantest"
)

// host is a network namespace on the test's LAN (a bridge in a namespace of its own).
type host struct {
	ns   string
	addr string // on eth0, /24
}

type topology struct {
	prefix string
	lan    string
	hosts  map[string]*host
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

// newTopology makes the LAN and hosts: name -> address. Everything is deleted at cleanup.
func newTopology(t *testing.T, hosts map[string]string) *topology {
	prefix := fmt.Sprintf("l4f%d", os.Getpid()%10000)
	tp := &topology{prefix: prefix, lan: prefix + "-lan", hosts: map[string]*host{}}
	t.Cleanup(func() {
		for _, h := range tp.hosts {
			exec.Command("ip", "netns", "del", h.ns).Run()
		}
		exec.Command("ip", "netns", "del", tp.lan).Run()
	})
	sh(t, "ip", "netns", "add", tp.lan)
	sh(t, "ip", "-n", tp.lan, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", tp.lan, "link", "set", "br0", "up")
	i := 0
	for name, addr := range hosts {
		i++
		h := &host{ns: prefix + "-" + name, addr: addr}
		tp.hosts[name] = h
		sh(t, "ip", "netns", "add", h.ns)
		peer := fmt.Sprintf("v%d", i)
		sh(t, "ip", "-n", tp.lan, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		sh(t, "ip", "-n", tp.lan, "link", "set", peer, "master", "br0", "up")
		sh(t, "ip", "-n", h.ns, "addr", "add", addr+"/24", "dev", "eth0")
		sh(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
	}
	return tp
}

// in runs f with the calling thread inside the host's namespace.
func (h *host) in(f func() error) error { return lantest.In(h.ns, f) }

// mac of the host's eth0.
func (h *host) mac(t *testing.T) string {
	out := sh(t, "ip", "-n", h.ns, "-o", "link", "show", "eth0")
	f := strings.Fields(out[strings.Index(out, "link/ether"):])
	return f[1]
}

// has reports whether addr is on one of the host's interfaces.
func (h *host) has(addr string) bool {
	out, _ := exec.Command("ip", "-n", h.ns, "-o", "addr", "show").Output()
	return strings.Contains(string(out), " "+addr+"/")
}

// arping asks the LAN from h who has addr and returns the MACs that answered within wait.
func (h *host) arping(addr string, wait time.Duration) ([]string, error) {
	return lantest.WhoHas(h.ns, "eth0", addr, wait)
}

// neighbour is the MAC the host's neighbour table has for addr ("" when none).
func (h *host) neighbour(addr string) string {
	out, _ := exec.Command("ip", "-n", h.ns, "neigh", "show", addr).Output()
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// forwarder makes the API server (on the test's loopback) reachable on 127.0.0.1:port inside
// a host; cut() severs it, as a partition would.
type forwarder struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	delay atomic.Int64 // added to every chunk each way, to play a slow API server
}

func forward(t *testing.T, h *host, port int, target string) *forwarder {
	f := &forwarder{}
	if err := h.in(func() (err error) {
		f.ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
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
	t.Cleanup(f.cut)
	return f
}

func (f *forwarder) copy(dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			time.Sleep(time.Duration(f.delay.Load()))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *forwarder) cut() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// fetch connects from the host to addr and returns what was answered.
func (h *host) fetch(addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := h.in(func() (err error) {
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
