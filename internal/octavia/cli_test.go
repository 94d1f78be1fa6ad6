package octavia_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/ipam/neutron"
	"github.com/l4lb/l4lb/internal/octavia"
	"github.com/l4lb/l4lb/test/lantest"
	"github.com/l4lb/l4lb/test/testenv"
)

// TestSeedWithTheOpenstackCLI runs the seed's walkthrough word for word with Debian's openstack
// CLI and its Octavia plugin, against l4lb's Octavia API registered in the real Keystone's
// catalog as the load-balancer service (hack/octavia-catalog.sh), the controller allocating
// the VIP as a real Neutron port on the seed's private-subnet: the names lb_test_1,
// 80_listener, ... 80_healthcheck; the lists print what Octavia would; the statuses reach
// ACTIVE and ONLINE; the floating IP step associates the user's floating IP with the VIP port;
// then the seed's own test passes on hosts of private-subnet (network namespaces, each with
// its Neutron port): from a client, the VIP answers alternately from both back-ends on 80
// and 443 and /health answers, carried by a dataplane agent run as the DaemonSet runs it; kubectl
// sees the objects; and the CLI's deletes remove them. (The seed's member addresses were lost
// from its text: the back-ends' are used.)
func TestSeedWithTheOpenstackCLI(t *testing.T) {
	defer catch(t)
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatal("the openstack CLI is missing: hack/openstack.sh up installs python3-openstackclient and python3-octaviaclient")
	}
	l := newLabWith(t, func(mgr ctrl.Manager, secret client.ObjectKey) map[lbv1.Provider]ipam.Provider {
		return map[lbv1.Provider]ipam.Provider{
			lbv1.ProviderStatic:    ipam.NewStatic(nil, mgr.GetClient()),
			lbv1.ProviderOpenStack: neutron.New(mgr, secret, "openstack", "test-octavia-cli"),
		}
	}, "")
	ctx := l.ctx
	dir := t.TempDir()
	clouds := filepath.Join(dir, "clouds.yaml")
	mustDo(os.WriteFile(clouds, cloudsYAML, 0o600))
	env := append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+clouds, "OS_CLOUD=l4lb-local")
	cli := func(args ...string) string {
		cmd := exec.Command("openstack", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	cleanup := func(args ...string) {
		t.Cleanup(func() {
			cmd := exec.Command("openstack", args...)
			cmd.Env = env
			cmd.Run()
		})
	}

	// The hosts of private-subnet: a node, the seed's two back-ends and a client, each holding
	// its address as a Neutron port, so that Neutron gives the VIP an address none of them has.
	hosts := map[string]string{"n1": "192.0.2.5", "m1": "192.0.2.11", "m2": "192.0.2.12", "client": "192.0.2.50"}
	for name, ip := range hosts {
		port := fmt.Sprintf("seed-%s-%d", name, os.Getpid())
		cli("port", "create", "--network", "private-net", "--fixed-ip", "subnet=private-subnet,ip-address="+ip, port)
		cleanup("port", "delete", port)
	}
	lan := lantest.NewTopology(t, hosts)
	members := []string{hosts["m1"], hosts["m2"]}
	for _, m := range []string{"m1", "m2"} {
		seedApp(t, lan.Hosts[m])
	}
	l.runAgent(lan.Hosts["n1"], "n1", lan.Hosts["client"].Addr)

	// The catalog: load-balancer at this server, as an administrator registers it.
	script := exec.Command(filepath.Join(testenv.Root(), "hack", "octavia-catalog.sh"), l.url)
	script.Env = env
	if out, err := script.CombinedOutput(); err != nil {
		t.Fatalf("hack/octavia-catalog.sh: %v\n%s", err, out)
	}
	cleanup("service", "delete", "octavia")

	// The seed, in order.
	subnet := cli("subnet", "list", "--name", "private-subnet", "-f", "value", "-c", "ID")
	cli("loadbalancer", "create", "--vip-subnet-id", subnet, "--name", "lb_test_1")
	if out := cli("loadbalancer", "list"); !strings.Contains(out, "lb_test_1") || !strings.Contains(out, "l4lb") {
		t.Fatalf("loadbalancer list:\n%s", out)
	}
	for _, port := range []string{"80", "443"} {
		cli("loadbalancer", "listener", "create", "--name", port+"_listener", "--protocol", "TCP", "--protocol-port", port, "lb_test_1")
	}
	if out := cli("loadbalancer", "listener", "list", "-f", "value", "-c", "name", "-c", "protocol_port"); !strings.Contains(out, "80_listener 80") || !strings.Contains(out, "443_listener 443") {
		t.Fatalf("listener list:\n%s", out)
	}
	for _, port := range []string{"80", "443"} {
		cli("loadbalancer", "pool", "create", "--name", port+"_pool", "--listener", port+"_listener", "--protocol", "TCP", "--lb-algorithm", "ROUND_ROBIN")
		for i, ip := range members {
			cli("loadbalancer", "member", "create", "--name", fmt.Sprintf("%s_member_%d", port, i+1), "--address", ip, "--protocol-port", port, port+"_pool")
		}
		if out := cli("loadbalancer", "member", "list", port+"_pool", "-f", "value", "-c", "name", "-c", "address"); out != fmt.Sprintf("%s_member_1 %s\n%s_member_2 %s", port, members[0], port, members[1]) {
			t.Fatalf("member list %s_pool:\n%s", port, out)
		}
	}
	cli("loadbalancer", "healthmonitor", "create", "--name", "80_healthcheck", "--delay", "60", "--timeout", "20", "--max-retries", "2", "--url-path", "/health", "--type", "http", "80_pool")

	// ACTIVE and ONLINE, as the seed expects before its floating IP step.
	for end := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		out := cli("loadbalancer", "show", "lb_test_1", "-f", "value", "-c", "provisioning_status", "-c", "operating_status")
		if out == "ONLINE\nACTIVE" || out == "ACTIVE\nONLINE" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("lb_test_1 is %q two minutes on", out)
		}
	}
	fip := cli("floating", "ip", "create", "public-net", "-f", "value", "-c", "floating_ip_address")
	cleanup("floating", "ip", "delete", fip)
	vipPort := cli("loadbalancer", "show", "lb_test_1", "-f", "value", "-c", "vip_port_id")
	cli("floating", "ip", "set", "--port", vipPort, fip)
	vipAddr := cli("loadbalancer", "show", "lb_test_1", "-f", "value", "-c", "vip_address")
	if out := cli("floating", "ip", "list", "-f", "value", "-c", "Floating IP Address", "-c", "Fixed IP Address"); !strings.Contains(out, fip+" "+vipAddr) {
		t.Fatalf("floating IP %s not on the VIP %s:\n%s", fip, vipAddr, out)
	}

	// The seed's test, from the client: the VIP answers alternately from both back-ends on 80,
	// $VIP/health answers, and 443 is balanced too.
	seedTraffic(t, lan.Hosts["client"], vipAddr, members)

	// Octavia's statistics: what the agent holding the VIP counted of that traffic, read by
	// the API from the agent's metrics with the chart's service account.
	l.readStatsFrom(lan.Hosts["client"])
	// Octavia's amphorae: the node holding the VIP is the MASTER.
	// (The CLI prints the columns in its own order.)
	if out := cli("loadbalancer", "amphora", "list", "--loadbalancer", cli("loadbalancer", "show", "lb_test_1", "-f", "value", "-c", "id"),
		"-f", "value", "-c", "role", "-c", "status", "-c", "lb_network_ip", "-c", "ha_ip"); out != "ALLOCATED MASTER 192.0.2.5 "+vipAddr {
		t.Fatalf("amphora list --loadbalancer lb_test_1:\n%s", out)
	}
	stat := func(args ...string) map[string]int {
		var out map[string]int
		mustDo(json.Unmarshal([]byte(cli(append(args, "-f", "json")...)), &out))
		return out
	}
	// Port 80 carried the first answer, six alternations and /health; 443 six.
	if s := stat("loadbalancer", "listener", "stats", "show", "80_listener"); s["total_connections"] < 8 || s["bytes_in"] == 0 || s["bytes_out"] == 0 {
		t.Fatalf("80_listener's statistics after the seed's test: %v", s)
	}
	if s := stat("loadbalancer", "stats", "show", "lb_test_1"); s["total_connections"] < 14 || s["bytes_in"] == 0 || s["bytes_out"] == 0 {
		t.Fatalf("lb_test_1's statistics after the seed's test: %v", s)
	}
	// With no agent on the holder's node to ask, the stats calls say so rather than answer zeros.
	mustDo(l.k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: "l4lb-dataplane-n1"}}))
	cmd := exec.Command("openstack", "loadbalancer", "stats", "show", "lb_test_1")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no running dataplane agent on node n1") {
		t.Fatalf("stats with the holder's agent gone: %v\n%s", err, out)
	}

	// l4lb reports the user's floating IP once it looks at the load balancer again (a change,
	// as here, or its periodic check against the cloud).
	cli("loadbalancer", "set", "--description", "with a floating IP", "lb_test_1")
	for end := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		var lbs lbv1.LoadBalancerList
		mustDo(l.k8s.List(ctx, &lbs))
		if len(lbs.Items) == 1 && lbs.Items[0].Status.FloatingIPAddress == fip {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the LoadBalancer's status does not report the floating IP %s a minute on: %+v", fip, lbs.Items)
		}
	}

	// The objects, as kubectl shows them.
	var lbs lbv1.LoadBalancerList
	mustDo(l.k8s.List(ctx, &lbs, client.HasLabels{}))
	found := false
	for _, lb := range lbs.Items {
		if lb.Annotations[octavia.NameAnnotation] == "lb_test_1" && lb.Status.VIPPortID == vipPort && lb.Status.VIPAddress == vipAddr {
			found = true
		}
	}
	if !found {
		t.Fatalf("no LoadBalancer object for lb_test_1 with port %s and VIP %s", vipPort, vipAddr)
	}

	// Deleting through the CLI removes them; the user's floating IP stays theirs.
	cli("loadbalancer", "delete", "--cascade", "lb_test_1")
	for end := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		var left lbv1.LoadBalancerList
		mustDo(l.k8s.List(ctx, &left))
		if len(left.Items) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("%d load balancers two minutes after the CLI deleted lb_test_1", len(left.Items))
		}
	}
	if out := cli("floating", "ip", "list", "-f", "value", "-c", "Floating IP Address"); !strings.Contains(out, fip) {
		t.Fatalf("the user's floating IP %s was deleted with the load balancer", fip)
	}
}

// seedApp serves the seed's Flask app on h, ports 80 and 443: its name and address on every
// path, and "healthy!" on /health.
func seedApp(t *testing.T, h *lantest.Host) {
	for _, port := range []string{"80", "443"} {
		var ln net.Listener
		mustDo(h.In(func() (err error) {
			ln, err = net.Listen("tcp", ":"+port)
			return err
		}))
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" {
				fmt.Fprint(w, "healthy!")
				return
			}
			fmt.Fprintf(w, "Server : backend @ %s", h.Addr)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
}

// runAgent runs the dataplane agent on h as the DaemonSet does (host network, node name and
// address from the environment, every flag at its default: metrics over HTTPS on 10390),
// reaching the API server through a forwarder, and records its pod as the kubelet would;
// gateway is the host's default route, which the agent watches.
func (l *lab) runAgent(h *lantest.Host, node, gateway string) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: "l4lb-dataplane-" + node,
		Labels: map[string]string{"app.kubernetes.io/instance": "l4lb", "app.kubernetes.io/component": "dataplane"}},
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: true, Containers: []corev1.Container{{Name: "dataplane", Image: "l4lb"}}}}
	mustDo(l.k8s.Create(l.ctx, pod))
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: h.Addr, PodIPs: []corev1.PodIP{{IP: h.Addr}}}
	mustDo(l.k8s.Status().Update(l.ctx, pod))
	lantest.Sh(l.t, "ip", "-n", h.NS, "route", "add", "default", "via", gateway)
	u := must(url.Parse(l.env.Config.Host))
	lantest.Forward(l.t, h, 16443, u.Host)
	kc := filepath.Join(l.t.TempDir(), "kubeconfig")
	mustDo(os.WriteFile(kc, must(l.env.Kubeconfig("https://127.0.0.1:16443")), 0o600))
	bin := must(testenv.Binary(l.t.TempDir()))
	log := filepath.Join(l.t.TempDir(), node+".log")
	out := must(os.Create(log))
	cmd := exec.Command("ip", "netns", "exec", h.NS, bin, "dataplane", "--kubeconfig", kc)
	cmd.Env = append(os.Environ(), "NODE_NAME="+node, "HOST_IP="+h.Addr, "POD_NAMESPACE=l4lb-system")
	cmd.Stdout, cmd.Stderr = out, out
	mustDo(cmd.Start())
	l.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if l.t.Failed() {
			b, _ := os.ReadFile(log)
			l.t.Logf("agent %s log:\n%s", node, b)
		}
	})
}

// seedTraffic is the seed's test, from client: the VIP answers alternately from both
// back-ends on 80 (each request a new connection, as a browser's reload after its idle
// connection closed), $VIP/health answers healthy!, and 443 is balanced too.
func seedTraffic(t *testing.T, client *lantest.Host, vip string, members []string) {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = client.In(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
	get := func(url string) (string, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	// The agent announces the VIP once it holds it; the first answer may take a moment.
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, err := get("http://" + vip + "/")
		if err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the VIP %s does not answer the client 30 s on: %v", vip, err)
		}
	}
	for _, port := range []string{"80", "443"} {
		var seen []string
		for range 6 {
			seen = append(seen, must(get(fmt.Sprintf("http://%s:%s/", vip, port))))
		}
		backend := map[string]bool{"Server : backend @ " + members[0]: true, "Server : backend @ " + members[1]: true}
		for i, s := range seen {
			if !backend[s] || i > 0 && s == seen[i-1] {
				t.Fatalf("port %s: the answers do not alternate between both back-ends: %q", port, seen)
			}
		}
	}
	if s := must(get("http://" + vip + "/health")); s != "healthy!" {
		t.Fatalf("$VIP/health answered %q", s)
	}
}

// readStatsFrom makes the API read the agents' metrics as the chart runs it (its service
// account's token and rights, the agents' pods), connecting from h, on their LAN.
func (l *lab) readStatsFrom(h *lantest.Host) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: "l4lb-octavia-api"}}
	tr := &authenticationv1.TokenRequest{}
	mustDo(l.k8s.SubResource("token").Create(l.ctx, sa, tr))
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = h.In(func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	agents := &octavia.AgentMetrics{Client: l.api.Client, Namespace: "l4lb-system", Port: 10390,
		Selector: map[string]string{"app.kubernetes.io/instance": "l4lb", "app.kubernetes.io/component": "dataplane"},
		Token:    func() (string, error) { return tr.Status.Token, nil },
		HTTP: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}}
	l.api.Stats, l.api.Agents = agents.Node, agents.Nodes
}

// TestCLICalls runs the openstack CLI calls (Debian's python3-octaviaclient) that did not do
// what they do against Octavia, as the cloud's administrator against l4lb's Octavia API in
// Keystone's catalog, and checks what each prints: unset of a name and a description, lists
// filtered by admin state, by load balancer and by tag, set --tag, failover, amphora, quota,
// flavor and availability zone calls.
func TestCLICalls(t *testing.T) {
	defer catch(t)
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatal("the openstack CLI is missing: hack/openstack.sh up installs python3-openstackclient and python3-octaviaclient")
	}
	l, env, _ := cloudLab(t)
	cli := func(args ...string) string {
		ctx, cancel := context.WithTimeout(l.ctx, 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "openstack", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	show := func(args ...string) map[string]any {
		var out map[string]any
		mustDo(json.Unmarshal([]byte(cli(append(args, "-f", "json")...)), &out))
		return out
	}
	waitActive := func(name string) {
		for end := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
			if s := show("loadbalancer", "show", name)["provisioning_status"]; s == "ACTIVE" {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s is not ACTIVE a minute on", name)
			}
		}
	}

	subnet := cli("subnet", "show", "private-subnet", "-f", "value", "-c", "id")
	for _, name := range []string{"cli_a", "cli_b"} {
		cli("loadbalancer", "create", "--vip-subnet-id", subnet, "--name", name, "--description", "made by the CLI", "--wait")
		cli("loadbalancer", "listener", "create", "--name", name+"_80", "--protocol", "TCP", "--protocol-port", "80", "--wait", name)
		cli("loadbalancer", "pool", "create", "--name", name+"_pool", "--loadbalancer", name, "--protocol", "TCP", "--lb-algorithm", "ROUND_ROBIN", "--wait")
	}
	t.Cleanup(func() {
		for _, name := range []string{"cli_a", "cli_b", "renamed"} {
			cmd := exec.Command("openstack", "loadbalancer", "delete", "--cascade", name)
			cmd.Env = env
			cmd.Run()
		}
	})

	// unset: the value goes (Octavia stores null, the CLI prints it empty).
	cli("loadbalancer", "unset", "--description", "cli_a")
	if d := show("loadbalancer", "show", "cli_a")["description"]; d != nil && d != "" {
		t.Fatalf("description after unset --description: %q", d)
	}
	id := show("loadbalancer", "show", "cli_b")["id"].(string)
	cli("loadbalancer", "unset", "--name", id)
	if n := show("loadbalancer", "show", id)["name"]; n != nil && n != "" {
		t.Fatalf("name after unset --name: %q", n)
	}
	cli("loadbalancer", "set", "--name", "cli_b", id)
	waitActive("cli_b")

	// Lists filtered by admin state, load balancer, tag.
	if out := cli("loadbalancer", "list", "--enable", "-f", "value", "-c", "name"); out != "cli_a\ncli_b" && out != "cli_b\ncli_a" {
		t.Fatalf("loadbalancer list --enable:\n%s", out)
	}
	if out := cli("loadbalancer", "list", "--disable", "-f", "value", "-c", "name"); out != "" {
		t.Fatalf("loadbalancer list --disable:\n%s", out)
	}
	if out := cli("loadbalancer", "listener", "list", "--loadbalancer", "cli_a", "-f", "value", "-c", "name"); out != "cli_a_80" {
		t.Fatalf("listener list --loadbalancer cli_a:\n%s", out)
	}
	if out := cli("loadbalancer", "pool", "list", "--loadbalancer", "cli_b", "-f", "value", "-c", "name"); out != "cli_b_pool" {
		t.Fatalf("pool list --loadbalancer cli_b:\n%s", out)
	}
	cli("loadbalancer", "set", "--tag", "blue", "--tag", "green", "cli_a")
	waitActive("cli_a")
	if tags := fmt.Sprint(show("loadbalancer", "show", "cli_a")["tags"]); !strings.Contains(tags, "blue") || !strings.Contains(tags, "green") {
		t.Fatalf("tags after set --tag blue --tag green: %s", tags)
	}
	if out := cli("loadbalancer", "list", "--tags", "blue", "-f", "value", "-c", "name"); out != "cli_a" {
		t.Fatalf("loadbalancer list --tags blue:\n%s", out)
	}
	if out := cli("loadbalancer", "list", "--not-tags", "blue", "-f", "value", "-c", "name"); out != "cli_b" {
		t.Fatalf("loadbalancer list --not-tags blue:\n%s", out)
	}

	// The rest of the surface: answered in Octavia's shape.
	cli("loadbalancer", "failover", "cli_a")
	// Amphorae: n1's agent holds the VIPs; a second node's agent (its pod, as the kubelet
	// reports it) stands by.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: "l4lb-dataplane-n2",
		Labels: map[string]string{"app.kubernetes.io/instance": "l4lb", "app.kubernetes.io/component": "dataplane"}},
		Spec: corev1.PodSpec{NodeName: "n2", HostNetwork: true, Containers: []corev1.Container{{Name: "dataplane", Image: "l4lb"}}}}
	mustDo(l.k8s.Create(l.ctx, pod))
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.51.100.9"}
	mustDo(l.k8s.Status().Update(l.ctx, pod))
	lbA := show("loadbalancer", "show", "cli_b")["id"].(string)
	if out := cli("loadbalancer", "amphora", "list", "--loadbalancer", lbA, "-f", "value", "-c", "role", "-c", "lb_network_ip"); out != "MASTER 198.51.100.5\nBACKUP 198.51.100.9" {
		t.Fatalf("amphora list --loadbalancer cli_b:\n%s", out)
	}
	if out := cli("loadbalancer", "amphora", "list", "-f", "value", "-c", "id"); len(strings.Fields(out)) != 4 {
		t.Fatalf("amphora list (two load balancers, two nodes):\n%s", out)
	}
	backup := strings.Fields(cli("loadbalancer", "amphora", "list", "--loadbalancer", lbA, "-f", "value", "-c", "id"))[1]
	if a := show("loadbalancer", "amphora", "show", backup); a["loadbalancer_id"] != lbA || a["compute_id"] != "n2" || a["status"] != "READY" || a["role"] != "BACKUP" {
		t.Fatalf("amphora show %s: %v", backup, a)
	}
	project := cli("project", "show", "admin", "-f", "value", "-c", "id")
	cli("loadbalancer", "quota", "set", "--loadbalancer", "7", project)
	if q := show("loadbalancer", "quota", "show", project); fmt.Sprint(q["load_balancer"]) != "7" {
		t.Fatalf("quota show after quota set --loadbalancer 7: %v", q)
	}
	cli("loadbalancer", "quota", "reset", project)
	if out := cli("loadbalancer", "flavor", "list", "-f", "value"); out != "" {
		t.Fatalf("flavor list: %q", out)
	}
	if out := cli("loadbalancer", "availabilityzone", "list", "-f", "value"); out != "" {
		t.Fatalf("availabilityzone list: %q", out)
	}
}

// cloudLab is the lab with the OpenStack provider (VIP ports in the real Neutron), a dataplane
// agent holding the VIPs in a network namespace, l4lb's Octavia API registered in Keystone's
// catalog as the load-balancer service, and the roles Octavia's deployment guide creates. It
// returns the environment of a client of the cloud's administrator (OS_CLOUD) and a
// directory for the test.
func cloudLab(t *testing.T) (*lab, []string, string) {
	l := newLabWith(t, func(mgr ctrl.Manager, secret client.ObjectKey) map[lbv1.Provider]ipam.Provider {
		return map[lbv1.Provider]ipam.Provider{
			lbv1.ProviderStatic:    ipam.NewStatic(nil, mgr.GetClient()),
			lbv1.ProviderOpenStack: neutron.New(mgr, secret, "openstack", "test-conformance"),
		}
	}, "")
	dir := t.TempDir()
	clouds := filepath.Join(dir, "clouds.yaml")
	mustDo(os.WriteFile(clouds, cloudsYAML, 0o600))
	env := append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+clouds, "OS_CLOUD=l4lb-local")

	// The agent holds the VIPs (on the networks the clients make, or the seed's) in a
	// namespace of its own.
	lan := lantest.NewTopology(t, map[string]string{"n1": "198.51.100.5", "gw": "198.51.100.1"})
	// and IPv6 ones: a node answers for a VIP on the interface its route to it leaves by.
	if err := lantest.WaitLinkLocal(lan.Hosts["n1"].NS, "eth0", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	lantest.Sh(t, "ip", "-n", lan.Hosts["n1"].NS, "-6", "route", "add", "default", "dev", "eth0")
	l.runAgent(lan.Hosts["n1"], "n1", lan.Hosts["gw"].Addr)
	l.readStatsFrom(lan.Hosts["gw"]) // the statistics calls ask the agent's metrics

	script := exec.Command(filepath.Join(testenv.Root(), "hack", "octavia-catalog.sh"), l.url)
	script.Env = env
	if out, err := script.CombinedOutput(); err != nil {
		t.Fatalf("hack/octavia-catalog.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		cmd := exec.Command("openstack", "service", "delete", "octavia")
		cmd.Env = env
		cmd.Run()
	})
	for _, r := range []string{"load-balancer_member", "load-balancer_observer", "load-balancer_global_observer",
		"load-balancer_admin", "load-balancer_quota_admin", "member", "reader"} {
		l.role(r)
	}
	return l, env, dir
}
