package failover

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/l4lb/l4lb/test/lantest"
)

// TestKeepalivedFailover measures, on the same kind of hosts, the failover of keepalived VRRP
// with Octavia's settings (advert 1 s, priorities 100 and 90, nopreempt, GARP refresh 5 s):
// the mechanism Octavia's active-standby amphorae use. hack/failover-compare.sh runs it with
// TestVIPFailover and prints both gaps.
func TestKeepalivedFailover(t *testing.T) {
	if os.Getenv("L4LB_COMPARE_KEEPALIVED") == "" {
		t.Skip("a comparison, not a check: hack/failover-compare.sh runs it (it installs keepalived)")
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Fatal("keepalived is not installed: hack/failover-compare.sh installs it")
	}
	tp := lantest.NewTopology(t, map[string]string{"k1": "192.0.2.1", "k2": "192.0.2.2", "client": "192.0.2.50"})
	dir := t.TempDir()
	for i, node := range []string{"k1", "k2"} {
		h := tp.Hosts[node]
		// Each node serves the VIP's port itself, as an amphora does.
		srv := exec.Command("ip", "netns", "exec", h.NS, os.Args[0], "-test.run=^$")
		srv.Env = append(os.Environ(), backendEnv+"="+node+":80")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
		conf := filepath.Join(dir, node+".conf")
		os.WriteFile(conf, []byte(fmt.Sprintf(`global_defs {
  router_id %s
  vrrp_garp_master_refresh 5
  vrrp_garp_master_refresh_repeat 2
  script_user root
  enable_script_security
}
vrrp_instance l4lb {
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority %d
  nopreempt
  advert_int 1
  virtual_ipaddress {
    %s/32 dev eth0
  }
}
`, node, 100-10*i, vipAddr)), 0o644)
		ka := exec.Command("ip", "netns", "exec", h.NS, "keepalived", "-n", "-l", "-D", "-f", conf,
			"-p", filepath.Join(dir, node+".pid"), "-r", filepath.Join(dir, node+"-vrrp.pid"))
		if err := ka.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ka.Process.Kill(); ka.Wait() })
		if i == 0 {
			time.Sleep(4 * time.Second) // k1 becomes master first, as the active amphora
		}
	}
	cl := tp.Hosts["client"]
	target := vipAddr + ":80"
	// Settled: exactly one node holds the VIP and answers the client.
	var master string
	end := time.Now().Add(30 * time.Second)
	for {
		k1, k2 := tp.Hosts["k1"].Has(vipAddr), tp.Hosts["k2"].Has(vipAddr)
		if s, err := cl.Fetch(target, time.Second); err == nil && k1 != k2 && ((k1 && s == "k1") || (k2 && s == "k2")) {
			master = s
			break
		}
		if time.Now().After(end) {
			t.Fatalf("keepalived never settled on one master (k1 %v, k2 %v)", k1, k2)
		}
		time.Sleep(100 * time.Millisecond)
	}
	traffic := newClientLoop(cl, target)
	time.Sleep(300 * time.Millisecond)
	killedAt := time.Now()
	lantest.Sh(t, "ip", "-n", tp.Hosts[master].NS, "link", "set", "eth0", "down") // the master dies
	gap := traffic.firstSuccessAfter(t, killedAt, 30*time.Second)
	traffic.stop()
	fmt.Printf("failover gap (keepalived VRRP, Octavia's settings): %v\n", gap.Round(time.Millisecond))
}
