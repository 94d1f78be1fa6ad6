// Package scale measures what l4lb costs as the number of load balancers grows: the
// controller and one dataplane agent, each the l4lb binary with the chart's flags, against a
// real API server, the agent on a network-namespace host. `make bench` runs it; its figures
// are in docs/benchmarks.md ("Scale").
package scale

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/test/lantest"
	"github.com/l4lb/l4lb/test/testenv"
)

const (
	ns          = "project"
	memberHost  = "192.0.2.20" // members 192.0.2.20-23, on one host
	vipRange    = "10.96.0.0/20"
	apiForward  = 16443
	clientsHost = "192.0.2.50"
)

// process is a running process whose CPU time and memory are read from /proc.
type process struct{ pid int }

// cpu is the user and system time the process has used.
func (p process) cpu(b *testing.B) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command's name (which may hold spaces), from the third: utime and stime
	// are the 14th and 15th of the whole line, in clock ticks (100 a second on Linux).
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// rss is the process's resident memory in MiB.
func (p process) rss(b *testing.B) int {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(v)[0])
			return kb / 1024
		}
	}
	return 0
}

func start(b *testing.B, log string, args []string, env ...string) process {
	f, err := os.Create(log)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); f.Close() })
	return process{cmd.Process.Pid}
}

// writes counts the API server's writes so far (apiserver_request_total: creates, updates,
// patches and applies) by resource and subresource, and the events.
func writes(b *testing.B, ctx context.Context, cs *kubernetes.Clientset) map[string]int {
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]int{}
	label := func(line, name string) string {
		_, v, _ := strings.Cut(line, name+`="`)
		v, _, _ = strings.Cut(v, `"`)
		return v
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		switch label(line, "verb") {
		case "POST", "PUT", "PATCH", "APPLY":
		default:
			continue
		}
		group, res := label(line, "group"), label(line, "resource")
		if group != "lb.l4lb.io" && res != "events" {
			continue
		}
		if sub := label(line, "subresource"); sub != "" {
			res += "/" + sub
		}
		n, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		out[res] += int(n)
	}
	return out
}

// profiles saves 30 s of CPU profile of the API server, the controller and the agent, from 10 s
// into a step, to dir (go tool pprof dir/agent.pprof).
func profiles(ctx context.Context, cs *kubernetes.Clientset, node *lantest.Host, dir string) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(10 * time.Second):
	}
	// The agent's socket is in the node's namespace: its connection is made from there, and
	// the request written on it (an http.Client would dial from any thread).
	fetch := func(dial func() (net.Conn, error)) ([]byte, error) {
		conn, err := dial()
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		req, err := http.NewRequest("GET", "http://127.0.0.1:6060/debug/pprof/profile?seconds=30", nil)
		if err != nil {
			return nil, err
		}
		if err := req.Write(conn); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	dial := func() (net.Conn, error) { return net.Dial("tcp", "127.0.0.1:6060") }
	var wg sync.WaitGroup
	save := func(name string, get func() ([]byte, error)) {
		wg.Go(func() {
			raw, err := get()
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, name+".pprof"), raw, 0o644)
			}
			if err != nil {
				fmt.Printf("%s profile: %v\n", name, err)
			}
		})
	}
	save("apiserver", func() ([]byte, error) {
		return cs.RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "30").Timeout(time.Minute).DoRaw(ctx)
	})
	save("controller", func() ([]byte, error) { return fetch(dial) })
	save("agent", func() ([]byte, error) {
		return fetch(func() (conn net.Conn, err error) {
			err = node.In(func() (err error) { conn, err = dial(); return err })
			return conn, err
		})
	})
	wg.Wait()
}

// apply creates load balancers from..to-1 at once, as `kubectl apply` of one big file would,
// with eight writers.
func apply(b *testing.B, ctx context.Context, c client.Client, from, to int) {
	work := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var failed error
	for range 8 {
		wg.Go(func() {
			for i := range work {
				for _, o := range testenv.ScaleTree(ns, fmt.Sprintf("lb%d", i), "192.0.2") {
					if err := c.Create(ctx, o); err != nil {
						once.Do(func() { failed = err })
					}
				}
			}
		})
	}
	for i := from; i < to; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
}

// waitActive waits for n objects of list's kind to be ACTIVE, and returns how many are. It
// watches, as kubectl wait does: polling would list every object each time, work taken from
// the machine the processes measured share.
func waitActive(ctx context.Context, c client.WithWatch, list client.ObjectList, n int, limit time.Duration) int {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	active := map[string]bool{} // the names of those ACTIVE
	see := func(o client.Object, gone bool) {
		if !gone && provisioning(o) == lbv1.ProvisioningActive {
			active[o.GetName()] = true
		} else {
			delete(active, o.GetName())
		}
	}
	for ctx.Err() == nil {
		l := list.DeepCopyObject().(client.ObjectList)
		if err := c.List(ctx, l, client.InNamespace(ns)); err != nil {
			time.Sleep(time.Second)
			continue
		}
		items, err := meta.ExtractList(l)
		if err != nil {
			return 0
		}
		clear(active)
		for _, o := range items {
			see(o.(client.Object), false)
		}
		if len(active) >= n {
			return n
		}
		w, err := c.Watch(ctx, list.DeepCopyObject().(client.ObjectList), &client.ListOptions{Namespace: ns,
			Raw: &metav1.ListOptions{ResourceVersion: l.GetResourceVersion()}})
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		for ev := range w.ResultChan() { // closed when ctx ends or the watch does: then list again
			o, ok := ev.Object.(client.Object)
			if !ok { // an error (the resource version too old, say)
				w.Stop()
				continue
			}
			see(o, ev.Type == watch.Deleted)
			if len(active) >= n {
				w.Stop()
				return n
			}
		}
	}
	return len(active)
}

// provisioning is the provisioning status of one of the kinds the bench makes.
func provisioning(o client.Object) lbv1.ProvisioningStatus {
	switch o := o.(type) {
	case *lbv1.LoadBalancer:
		return o.Status.ProvisioningStatus
	case *lbv1.Listener:
		return o.Status.ProvisioningStatus
	case *lbv1.Pool:
		return o.Status.ProvisioningStatus
	}
	return ""
}

// BenchmarkScale applies 100 load balancers, then 900 more at once (1,000: 2,000 listeners and
// pools, 8,000 members) and reports, for each step, the time until all are ACTIVE and the CPU
// the controller and the agent spent per load balancer; then memory, and the time one member
// change takes to reach the data path at that size. -benchtime 1x: one run is minutes.
// L4LB_SCALE sets the sizes (default "100,1000").
func BenchmarkScale(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the agent's host is a network namespace: run as root")
	}
	steps := []int{100, 1000}
	if s := os.Getenv("L4LB_SCALE"); s != "" {
		steps = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("L4LB_SCALE=%q: %v", s, err)
			}
			steps = append(steps, n)
		}
	}
	ctrl.SetLogger(logr.Discard())
	logs := os.Getenv("L4LB_TEST_LOGS")
	if logs == "" {
		logs = b.TempDir()
	}
	tp := lantest.NewTopology(b, map[string]string{"node": "192.0.2.1", "members": memberHost, "client": clientsHost})
	node, members, cl := tp.Hosts["node"], tp.Hosts["members"], tp.Hosts["client"]
	for m := 1; m < 4; m++ {
		lantest.Sh(b, "ip", "-n", members.NS, "addr", "add", fmt.Sprintf("192.0.2.%d/24", 20+m), "dev", "eth0")
	}
	// The VIPs' range is on the LAN, as a node subnet's would be: announced (ARP) on eth0.
	for _, h := range []*lantest.Host{node, cl} {
		lantest.Sh(b, "ip", "-n", h.NS, "route", "add", vipRange, "dev", "eth0")
	}
	// Every member answers "old"; port 8081 of the first answers "new", for the member change.
	serve := func(addr, answer string) {
		var ln net.Listener
		if err := members.In(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte(answer))
				c.Close()
			}
		}()
	}
	serve(":8080", "old")
	serve(memberHost+":8081", "new")

	env := testenv.ForTest(b)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Client.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []string{"l4lb-system", ns} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			b.Fatal(err)
		}
	}
	for _, o := range []client.Object{
		&lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "scale"}, Spec: lbv1.VIPPoolSpec{Addresses: []string{vipRange}}},
		&lbv1.AddressPolicy{ObjectMeta: metav1.ObjectMeta{Name: "scale"}, Spec: lbv1.AddressPolicySpec{Allow: []string{"192.0.2.0/24"}}},
	} {
		if err := c.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	bin, err := testenv.Binary(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	kubeconfig, err := env.KubeconfigFile(dir)
	if err != nil {
		b.Fatal(err)
	}
	// L4LB_SCALE_PPROF=1 serves /debug/pprof on 127.0.0.1:6060, the controller's here and the
	// agent's in the node's namespace (ip netns exec ... go tool pprof), and saves profiles
	// of the three (and the API server) in the last step to the logs' folder (L4LB_TEST_LOGS).
	var pprof []string
	if os.Getenv("L4LB_SCALE_PPROF") != "" {
		pprof = []string{"--pprof-bind-address", "127.0.0.1:6060"}
	}
	// The chart's controller flags (but no metrics or probes).
	controller := start(b, filepath.Join(logs, "controller.log"), append([]string{bin, "controller", "--kubeconfig", kubeconfig,
		"--leader-elect", "--leader-election-namespace", "l4lb-system", "--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, pprof...))
	// The agent reaches the API server through a relay in its namespace, as a node would.
	api, err := url.Parse(env.Config.Host)
	if err != nil {
		b.Fatal(err)
	}
	lantest.Forward(b, node, apiForward, api.Host)
	kc, err := env.Kubeconfig(fmt.Sprintf("https://127.0.0.1:%d", apiForward))
	if err != nil {
		b.Fatal(err)
	}
	agentKC := filepath.Join(dir, "agent.kubeconfig")
	if err := os.WriteFile(agentKC, kc, 0o600); err != nil {
		b.Fatal(err)
	}
	agent := start(b, filepath.Join(logs, "agent.log"), append([]string{"ip", "netns", "exec", node.NS, bin, "dataplane", "--kubeconfig", agentKC,
		"--metrics-bind-address", "0"}, pprof...), "NODE_NAME=node", "HOST_IP="+node.Addr, "POD_NAMESPACE=l4lb-system")
	b.Cleanup(func() { exec.Command("ip", "netns", "exec", node.NS, bin, "dataplane", "--cleanup").Run() })

	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	pid, err := env.APIServerPID()
	if err != nil {
		b.Fatal(err)
	}
	apiserver := process{pid}
	b.ResetTimer()
	fmt.Printf("| load balancers (each 2 listeners, 2 pools of 4 members) | all created after | all ACTIVE after | their listeners and pools too | controller CPU ms per LB | agent CPU ms per LB | API server CPU ms per LB | controller RSS MiB | agent RSS MiB |\n|---|---|---|---|---|---|---|---|---|\n")
	done := 0
	var firstController, firstAgent float64
	for _, n := range steps {
		c0, a0, s0, w0 := controller.cpu(b), agent.cpu(b), apiserver.cpu(b), writes(b, ctx, cs)
		t0 := time.Now()
		if pprof != nil && n == steps[len(steps)-1] {
			go profiles(ctx, cs, node, logs)
		}
		apply(b, ctx, c, done, n)
		created := time.Since(t0)
		limit := 2*time.Minute + time.Duration(n-done)*500*time.Millisecond
		if got := waitActive(ctx, c, &lbv1.LoadBalancerList{}, n, limit); got < n {
			b.Fatalf("%d of %d load balancers ACTIVE after %v (logs in %s)", got, n, limit, logs)
		}
		took := time.Since(t0)
		// Their children too: each load balancer's tree is what its user waits for.
		for _, l := range []client.ObjectList{&lbv1.ListenerList{}, &lbv1.PoolList{}} {
			if got := waitActive(ctx, c, l, 2*n, limit); got < 2*n {
				b.Fatalf("%d of %d %T items ACTIVE after %v (logs in %s)", got, 2*n, l, limit, logs)
			}
		}
		tookAll := time.Since(t0)
		// Whatever the step set off (statuses written back, the agent's last apply) settles
		// before the CPU is read.
		time.Sleep(5 * time.Second)
		perC := float64((controller.cpu(b) - c0).Milliseconds()) / float64(n-done)
		perA := float64((agent.cpu(b) - a0).Milliseconds()) / float64(n-done)
		perS := float64((apiserver.cpu(b) - s0).Milliseconds()) / float64(n-done)
		fmt.Printf("| %d -> %d | %.1f s | %.1f s | %.1f s | %.1f | %.1f | %.1f | %d | %d |\n", done, n, created.Seconds(), took.Seconds(), tookAll.Seconds(), perC, perA, perS, controller.rss(b), agent.rss(b))
		b.ReportMetric(took.Seconds(), fmt.Sprintf("s-to-%d-active", n))
		// What the API server wrote for the step, per load balancer: its work grows with these.
		var per []string
		w1 := writes(b, ctx, cs)
		for _, k := range slices.Sorted(maps.Keys(w1)) {
			if d := w1[k] - w0[k]; d > 0 {
				per = append(per, fmt.Sprintf("%s %.1f", k, float64(d)/float64(n-done)))
			}
		}
		fmt.Printf("API server writes per load balancer, %d -> %d: %s\n", done, n, strings.Join(per, ", "))
		if done == 0 {
			firstController, firstAgent = perC, perA
		} else {
			fmt.Printf("CPU per load balancer, this step against the first: controller %.2fx, agent %.2fx\n", perC/firstController, perA/firstAgent)
		}
		done = n
	}

	// One member change at full size: the first listener's pool gets the member on port 8081.
	var lb lbv1.LoadBalancer
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "lb0"}, &lb); err != nil {
		b.Fatal(err)
	}
	target := lb.Status.VIPAddress + ":80"
	if got, err := cl.Fetch(target, time.Second); got != "old" {
		b.Fatalf("%s answers %q (%v), want old", target, got, err)
	}
	var p lbv1.Pool
	t0 := time.Now()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error { // statuses are written meanwhile
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "lb0-80"}, &p); err != nil {
			return err
		}
		p.Spec.Members = []lbv1.Member{{Name: "new", Address: memberHost, ProtocolPort: 8081}}
		return c.Update(ctx, &p)
	}); err != nil {
		b.Fatal(err)
	}
	for {
		if got, _ := cl.Fetch(target, time.Second); got == "new" {
			break
		}
		if time.Since(t0) > time.Minute {
			b.Fatalf("%s does not answer from the new member a minute after the change", target)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Printf("member change -> served at %d load balancers: %v\n", done, time.Since(t0).Round(time.Millisecond))
}
