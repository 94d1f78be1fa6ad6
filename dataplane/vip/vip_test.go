package vip

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/l4lb/l4lb/dataplane/internal/lantest"
)

// TestKernelSilentAgentAnswers proves, on two hosts (network namespaces joined by a veth),
// that a VIP made local by Local is answered on the LAN by the agent alone: the kernel, told
// by the guard, does not answer for it, so when the agent is gone (its responder closed, the
// guard and the address left behind as after SIGKILL) nobody answers; a new Local adopts the
// address, and a Sync without it removes it.
func TestKernelSilentAgentAnswers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root: run make test as root")
	}
	a, b := fmt.Sprintf("l4v%d-a", os.Getpid()%10000), fmt.Sprintf("l4v%d-b", os.Getpid()%10000)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", a).Run(); exec.Command("ip", "netns", "del", b).Run() })
	run("ip", "netns", "add", a)
	run("ip", "netns", "add", b)
	run("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
	run("ip", "-n", a, "addr", "add", "198.51.100.1/24", "dev", "eth0")
	run("ip", "-n", b, "addr", "add", "198.51.100.2/24", "dev", "eth0")
	for _, ns := range []string{a, b} {
		run("ip", "-n", ns, "link", "set", "eth0", "up")
		run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	vip := netip.MustParseAddr("198.51.100.100")
	who := func() []string {
		t.Helper()
		macs, err := lantest.WhoHas(b, "eth0", vip.String(), 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		return macs
	}

	var l *Local
	if err := lantest.In(a, func() (err error) {
		l, err = New(Config{Interface: "lo"})
		if err != nil {
			return err
		}
		if errs := l.Sync(map[netip.Addr]bool{vip: true}, map[netip.Addr]bool{vip: true}); len(errs) > 0 {
			return fmt.Errorf("%v", errs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := who(); len(got) != 1 {
		t.Fatalf("the holder answers ARP for its VIP with %d replies, want 1 (the agent's)", len(got))
	}
	// Unanswered but local (lingering): nobody answers.
	lantest.In(a, func() error { l.Sync(map[netip.Addr]bool{vip: true}, nil); return nil })
	if got := who(); len(got) != 0 {
		t.Fatalf("a lingering VIP is answered by %v", got)
	}
	// The agent dies: its responder goes with it, the address and the guard stay.
	lantest.In(a, func() error { l.Sync(map[netip.Addr]bool{vip: true}, map[netip.Addr]bool{vip: true}); return nil })
	for _, r := range l.responders {
		r.close()
	}
	if got := who(); len(got) != 0 {
		t.Fatalf("after the agent died the node still answers for the VIP: %v", got)
	}
	// A new agent adopts the address, then lets it go.
	if err := lantest.In(a, func() error {
		l2, err := New(Config{Interface: "lo"})
		if err != nil {
			return err
		}
		if !l2.added[vip] {
			return fmt.Errorf("the restarted agent did not adopt %s: %v", vip, l2.added)
		}
		l2.Sync(nil, nil)
		if IsLocal(vip) {
			return fmt.Errorf("%s still local after the new agent released it", vip)
		}
		return l2.Close()
	}); err != nil {
		t.Fatal(err)
	}
}
