package standalone

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/l4lb/l4lb/test/tcptest"
)

// TestServesReloadsAndSurvivesABadEdit runs the standalone mode on a file: it serves the
// listener, follows an edit that moves it to another port, and keeps serving the last good
// configuration when the file is broken.
func TestServesReloadsAndSurvivesABadEdit(t *testing.T) {
	mport := tcptest.Named(t, "member").Port()
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	config := func(port int) string {
		return fmt.Sprintf(`apiVersion: lb.l4lb.io/v1alpha1
kind: LoadBalancer
metadata: {name: lb}
spec: {provider: static, vip: {address: 127.0.0.1}}
---
apiVersion: lb.l4lb.io/v1alpha1
kind: Listener
metadata: {name: l}
spec: {loadBalancerRef: {name: lb}, protocol: TCP, protocolPort: %d}
---
apiVersion: lb.l4lb.io/v1alpha1
kind: Pool
metadata: {name: p}
spec: {listenerRef: {name: l}, protocol: TCP, lbAlgorithm: ROUND_ROBIN, members: [{name: m, address: 127.0.0.1, protocolPort: %d}]}
`, port, mport)
	}
	path := filepath.Join(t.TempDir(), "l4lb.yaml")
	first, second := free(), free()
	if err := os.WriteFile(path, []byte(config(first)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Path: path, MetricsAddr: "0", MemberCongestion: ""}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	serves := func(port int) bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		b, _ := io.ReadAll(c)
		return string(b) == "member"
	}
	waitServes := func(port int, what string) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); !serves(port); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s: port %d does not serve", what, port)
			}
		}
	}
	waitServes(first, "start")
	// An edit moves the listener (the file is polled every second; a new mtime counts).
	time.Sleep(1100 * time.Millisecond)
	if err := os.WriteFile(path, []byte(config(second)), 0o644); err != nil {
		t.Fatal(err)
	}
	waitServes(second, "after the edit")
	// A bad edit: the last good configuration keeps serving.
	time.Sleep(1100 * time.Millisecond)
	if err := os.WriteFile(path, []byte("kind: [broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if !serves(second) {
		t.Fatal("a broken file stopped the last good configuration")
	}
}
