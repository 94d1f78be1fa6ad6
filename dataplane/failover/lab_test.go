package failover

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/arp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/test/lantest"
	"github.com/l4lb/l4lb/test/testenv"
)

// lab is a LAN of dataplane nodes n1..nN (192.0.2.1..), members m1 and m2 (.11, .12) and a
// client (.50, the nodes' default gateway, so the agents' default witness), with a real API
// server and controller; the agents run as separate processes with the chart's defaults.
type lab struct {
	t      *testing.T
	tp     *lantest.Topology
	env    *testenv.Env
	k8s    client.Client
	ctx    context.Context
	bin    string
	api    string
	agents map[string]*agentProc
	cl     *lantest.Host
	target string
}

type agentProc struct {
	node string
	cmd  *exec.Cmd
	fwd  *lantest.Forwarder
	log  string
	args []string // flags beyond the defaults (restartWith)
}

func newLab(t *testing.T, n int) *lab {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root: run make test as root")
	}
	ctrl.SetLogger(logr.Discard())
	addrs := map[string]string{"m1": "192.0.2.11", "m2": "192.0.2.12", "client": "192.0.2.50"}
	for i := 1; i <= n; i++ {
		addrs[fmt.Sprintf("n%d", i)] = fmt.Sprintf("192.0.2.%d", i)
	}
	l := &lab{t: t, tp: lantest.NewTopology(t, addrs), agents: map[string]*agentProc{}, target: vipAddr + ":80"}
	l.cl = l.tp.Hosts["client"]
	for i := 1; i <= n; i++ {
		lantest.Sh(t, "ip", "-n", l.tp.Hosts[fmt.Sprintf("n%d", i)].NS, "route", "add", "default", "via", "192.0.2.50")
	}
	var err error
	if l.bin, err = testenv.Binary(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"m1", "m2"} {
		cmd := exec.Command("ip", "netns", "exec", l.tp.Hosts[m].NS, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), backendEnv+"="+m)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	l.env = testenv.ForTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l.ctx, l.k8s = ctx, l.env.Client
	for _, ns := range []string{"l4lb-system", "app"} {
		if err := l.k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.env.Run(ctx, testenv.ControlPlane{}); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(l.env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	l.api = u.Host
	return l
}

// start runs node's agent as the DaemonSet does: its name and address from the environment
// (and env), every other flag at its default.
func (l *lab) start(node string, env ...string) {
	a := l.agents[node]
	if a == nil {
		a = &agentProc{node: node, log: filepath.Join(l.logDir(), node+".log")}
		l.agents[node] = a
	}
	h := l.tp.Hosts[node]
	if a.fwd != nil {
		a.fwd.Cut()
	}
	a.fwd = lantest.Forward(l.t, h, 16443, l.api)
	kc, err := l.env.Kubeconfig("https://127.0.0.1:16443")
	if err != nil {
		l.t.Fatal(err)
	}
	kcPath := filepath.Join(l.t.TempDir(), node+".kubeconfig")
	os.WriteFile(kcPath, kc, 0o600)
	logf, _ := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	a.cmd = exec.Command("ip", append([]string{"netns", "exec", h.NS, l.bin, "dataplane", "--kubeconfig", kcPath, "--metrics-bind-address", "0"}, a.args...)...)
	a.cmd.Env = append(os.Environ(), "NODE_NAME="+node, "HOST_IP="+h.Addr, "POD_NAMESPACE=l4lb-system")
	a.cmd.Env = append(a.cmd.Env, env...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	cmd := a.cmd
	l.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// logDir is where agents write their logs: L4LB_TEST_LOGS (kept after the test, to read a
// run that passed too), or the test's own.
func (l *lab) logDir() string {
	if dir := os.Getenv("L4LB_TEST_LOGS"); dir != "" {
		return dir
	}
	return l.t.TempDir()
}

// kill SIGKILLs node's agent, as an OOM kill would.
func (l *lab) kill(node string) {
	a := l.agents[node]
	a.cmd.Process.Kill()
	a.cmd.Wait()
}

func (l *lab) createLB() {
	objs := []client.Object{
		&lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: lbv1.VIPPoolSpec{Addresses: []string{vipAddr + "/32"}}},
		&lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "lb"},
			Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderStatic, VIP: &lbv1.VIP{Address: vipAddr}}},
		&lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "l"},
			Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb"}, Protocol: lbv1.ListenerTCP, ProtocolPort: 80}},
		&lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"},
			Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: "l"}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin,
				Members: []lbv1.Member{{Name: "m1", Address: "192.0.2.11", ProtocolPort: 8080}, {Name: "m2", Address: "192.0.2.12", ProtocolPort: 8080}}}},
	}
	for _, o := range objs {
		if err := l.k8s.Create(l.ctx, o); err != nil {
			l.t.Fatal(err)
		}
	}
}

func (l *lab) dumpLogs() {
	for _, a := range l.agents {
		log, _ := os.ReadFile(a.log)
		// memberlist's send errors under a cut repeat by the hundred and hide the decisions.
		lines := slices.DeleteFunc(strings.Split(string(log), "\n"), func(s string) bool {
			return strings.Contains(s, "memberlist: Failed to send")
		})
		l.t.Logf("agent %s log tail (send errors left out):\n%s", a.node, tail(strings.Join(lines, "\n"), 40))
	}
}

func (l *lab) waitServed(what string) {
	l.t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		if s, err := l.cl.Fetch(l.target, time.Second); err == nil && (s == "m1" || s == "m2") {
			return
		}
		if time.Now().After(end) {
			l.dumpLogs()
			l.t.Fatalf("%s: the VIP does not answer the client", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (l *lab) mac(node string) string { return l.tp.Hosts[node].MAC(l.t) }

// nodeOf is the node whose eth0 has mac.
func (l *lab) nodeOf(mac string) string {
	for n := range l.agents {
		if l.mac(n) == mac {
			return n
		}
	}
	return "?" + mac
}

// answering are the MACs that answer an ARP request for the VIP from the client.
func (l *lab) answering() []string {
	macs, err := l.cl.Arping(vipAddr, 200*time.Millisecond)
	if err != nil {
		l.t.Fatal(err)
	}
	return macs
}

// waitSoleAnswer waits until exactly one node, not not, answers ARP for the VIP, and
// returns it.
func (l *lab) waitSoleAnswer(not string) string {
	l.t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		if m := l.answering(); len(m) == 1 && l.nodeOf(m[0]) != not {
			return l.nodeOf(m[0])
		}
		if time.Now().After(end) {
			l.dumpLogs()
			l.t.Fatalf("no single node other than %q answers for the VIP: %v", not, l.answering())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitClientPointsAtHolder waits until exactly one node answers ARP for the VIP and the
// client's neighbour entry for the VIP is that node's MAC, and returns the node. The two may
// disagree for a moment at the start (two agents that did not yet see each other may both
// claim the VIP until they settle it); the holder's announcements, repeated for 3 s
// (vip.announceAt), must then bring the client back: past that, the client is stranded on
// another node, and the test fails.
func (l *lab) waitClientPointsAtHolder() string {
	l.t.Helper()
	holder := l.waitSoleAnswer("")
	end := time.Now().Add(5 * time.Second)
	for {
		l.cl.Fetch(l.target, time.Second)
		got := l.cl.Neighbour(vipAddr)
		if got == l.mac(holder) {
			return holder
		}
		if time.Now().After(end) {
			l.dumpLogs()
			l.t.Fatalf("the client's neighbour entry for the VIP is %q (%s), the holder %s has %s", got, l.nodeOf(got), holder, l.mac(holder))
		}
		time.Sleep(100 * time.Millisecond)
		holder = l.waitSoleAnswer("")
	}
}

// pauseAPI stops the API server (SIGSTOP, as an etcd stall or a control-plane upgrade does)
// for d under a client opening a connection every 20 ms, then lets it run 5 s more: no
// connection may fail and only holder may answer for the VIP throughout.
func (l *lab) pauseAPI(what string, d time.Duration, holder string) {
	l.t.Helper()
	pid, err := l.env.APIServerPID()
	if err != nil {
		l.t.Fatal(err)
	}
	arp := l.sampleARP()
	traffic := newClientLoop(l.cl, l.target)
	time.Sleep(300 * time.Millisecond)
	syscall.Kill(pid, syscall.SIGSTOP)
	resumed := false
	resume := func() {
		if !resumed {
			syscall.Kill(pid, syscall.SIGCONT)
			resumed = true
		}
	}
	l.t.Cleanup(resume)
	time.Sleep(d)
	resume()
	time.Sleep(5 * time.Second)
	ok, refused, cut := traffic.stop()
	samples, off := arp.stopExpecting(l.mac(holder))
	fmt.Printf("API server paused %s: %d connections answered, %d refused, %d cut; %d of %d ARP samples answered by another node\n",
		what, ok, refused, cut, off, samples)
	if refused+cut != 0 || ok == 0 || off != 0 {
		l.dumpLogs()
		l.t.Fatalf("API server paused %s: %d answered, %d refused, %d cut; %d of %d ARP samples answered by another node than the holder %s",
			what, ok, refused, cut, off, samples, holder)
	}
}

// arpSampler asks who has the VIP over and over, from the client.
type arpSampler struct {
	mu      sync.Mutex
	samples []arpSample
	done    chan struct{}
	wg      sync.WaitGroup
}

type arpSample struct {
	at   time.Time
	macs []string
}

func (l *lab) sampleARP() *arpSampler {
	s := &arpSampler{done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			select {
			case <-s.done:
				return
			default:
			}
			macs, _ := l.cl.Arping(vipAddr, 100*time.Millisecond)
			slices.Sort(macs)
			s.mu.Lock()
			s.samples = append(s.samples, arpSample{time.Now(), macs})
			s.mu.Unlock()
		}
	}()
	return s
}

// stop ends the sampling: the most MACs that answered one request, and how often the sole
// answering MAC changed.
func (s *arpSampler) stop() (maxMACs, moves int) {
	close(s.done)
	s.wg.Wait()
	last := ""
	for _, x := range s.samples {
		maxMACs = max(maxMACs, len(x.macs))
		if len(x.macs) == 1 {
			if last != "" && x.macs[0] != last {
				moves++
			}
			last = x.macs[0]
		}
	}
	return maxMACs, moves
}

// longestOverlap is the longest run of samples two or more MACs answered, and when it began.
func (s *arpSampler) longestOverlap() (time.Duration, time.Time) {
	return s.longestRun(func(macs int) bool { return macs > 1 })
}

// longestSilence is the longest run of samples nobody answered, and when it began.
func (s *arpSampler) longestSilence() (time.Duration, time.Time) {
	return s.longestRun(func(macs int) bool { return macs == 0 })
}

// longestRun is the longest run of samples whose count of answering MACs is in, from its
// first sample to the first not in it (or the last sample), and when it began.
func (s *arpSampler) longestRun(in func(macs int) bool) (time.Duration, time.Time) {
	var longest time.Duration
	var from, since time.Time
	end := func(at time.Time) {
		if d := at.Sub(since); d > longest {
			longest, from = d, since
		}
		since = time.Time{}
	}
	for _, x := range s.samples {
		switch {
		case in(len(x.macs)) && since.IsZero():
			since = x.at
		case !in(len(x.macs)) && !since.IsZero():
			end(x.at)
		}
	}
	if !since.IsZero() {
		end(s.samples[len(s.samples)-1].at)
	}
	return longest, from
}

// stopExpecting ends the sampling and counts the samples answered by another MAC than mac
// (a sample nobody answered within its 100 ms is a slow reply on a loaded machine, not a move:
// the client's connections say whether the VIP was served).
func (s *arpSampler) stopExpecting(mac string) (samples, off int) {
	s.stop()
	for _, x := range s.samples {
		if slices.ContainsFunc(x.macs, func(m string) bool { return m != mac }) {
			off++
		}
	}
	return len(s.samples), off
}

// overlap is how long two or more MACs answered (each sample counts until the next).
func (s *arpSampler) overlap() time.Duration {
	var d time.Duration
	for i := 0; i+1 < len(s.samples); i++ {
		if len(s.samples[i].macs) > 1 {
			d += s.samples[i+1].at.Sub(s.samples[i].at)
		}
	}
	return d
}

// captureGARP counts, from 5 s after now (past the announcements of a takeover, which repeat
// for 3 s) until the returned function is called, the gratuitous ARPs for the VIP (sender and
// target both the VIP) that reach the client.
func (l *lab) captureGARP() func() int {
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	var c *arp.Client
	err := l.cl.In(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		l.t.Fatal(err)
	}
	vip := netip.MustParseAddr(vipAddr)
	from := time.Now().Add(5 * time.Second)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			p, _, err := c.Read()
			select {
			case <-done:
				return
			default:
			}
			if err == nil && p.SenderIP == vip && p.TargetIP == vip && time.Now().After(from) {
				mu.Lock()
				n++
				mu.Unlock()
			}
		}
	}()
	return func() int {
		close(done)
		<-finished
		c.Close()
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// countWrites counts, for d, the writes to node Leases and to the l4lb objects (each is an
// event on a watch).
func (l *lab) countWrites(d time.Duration) int {
	l.t.Helper()
	wc, err := client.NewWithWatch(l.env.Config, client.Options{Scheme: l.k8s.Scheme()})
	if err != nil {
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(l.ctx, d)
	defer cancel()
	var mu sync.Mutex
	n := 0
	var wg sync.WaitGroup
	for _, list := range []client.ObjectList{&coordinationv1.LeaseList{}, &lbv1.LoadBalancerList{}, &lbv1.ListenerList{}, &lbv1.PoolList{}, &lbv1.HealthMonitorList{}} {
		// From the list's resourceVersion on: only what is written from now.
		if err := wc.List(ctx, list); err != nil {
			l.t.Fatal(err)
		}
		w, err := wc.Watch(ctx, list, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.GetResourceVersion()}})
		if err != nil {
			l.t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case ev, ok := <-w.ResultChan():
					if !ok {
						return
					}
					if ev.Type == "BOOKMARK" {
						continue
					}
					mu.Lock()
					n++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return n
}

// accepted is how many connections member m accepted so far.
func (l *lab) accepted(m string) int {
	s, err := l.cl.Fetch(l.tp.Hosts[m].Addr+":8081", time.Second)
	if err != nil {
		l.t.Fatalf("asking %s how many connections it accepted: %v", m, err)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		l.t.Fatal(err)
	}
	return n
}

// blackhole drops what node from sends to node to, as a partition between them would.
func (l *lab) blackhole(from, to string) {
	lantest.Sh(l.t, "ip", "-n", l.tp.Hosts[from].NS, "route", "add", "blackhole", l.tp.Hosts[to].Addr+"/32")
}

func (l *lab) heal(from, to string) {
	lantest.Sh(l.t, "ip", "-n", l.tp.Hosts[from].NS, "route", "del", "blackhole", l.tp.Hosts[to].Addr+"/32")
}
