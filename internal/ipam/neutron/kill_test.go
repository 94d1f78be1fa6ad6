package neutron_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/test/testenv"
)

// controllerProcess runs the l4lb binary's controller, as a Deployment would, with its default
// flags but for the ports it listens on (several run on this machine at once).
type controllerProcess struct {
	bin, kubeconfig string
	cmd             *exec.Cmd
}

func (c *controllerProcess) start(t *testing.T) {
	t.Helper()
	c.cmd = exec.Command(c.bin, "controller", "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--openstack-secret", "l4lb-system/openstack-credentials", "--cluster-id", "test-kill")
	c.cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig)
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

// kill ends it as the OOM killer or a node's death would: SIGKILL, nothing runs after.
func (c *controllerProcess) kill() {
	if c.cmd != nil && c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.cmd.Wait()
	}
	c.cmd = nil
}

// TestControllerKilledMidwayLeaksNothing: 20 times, a load balancer with a floating IP is
// created and deleted through the API server while the controller process is SIGKILLed at a
// random moment of its creation (port, floating IP) and of its deletion, then started again.
// Each one ends allocated, each deletion completes, and the cloud is left with no port and no
// floating IP of them.
func TestControllerKilledMidwayLeaksNothing(t *testing.T) {
	ns := runNamespace("kill")
	env, _ := cloudTest(t, ns)
	k8s := env.Client
	dir := t.TempDir()
	bin, err := testenv.Binary(dir)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := env.KubeconfigFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := &controllerProcess{bin: bin, kubeconfig: kubeconfig}
	defer c.kill()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	allocated := func(lb *lbv1.LoadBalancer) error {
		if !meta.IsStatusConditionTrue(lb.Status.Conditions, lbv1.ConditionSynced) || lb.Status.VIPPortID == "" || lb.Status.FloatingIPID == "" {
			return fmt.Errorf("%s: %+v", lb.Name, lb.Status)
		}
		return nil
	}
	for i := range 20 {
		lb := openstackLB(ns, fmt.Sprintf("lb-%d", i))
		if err := k8s.Create(context.Background(), lb); err != nil {
			t.Fatal(err)
		}
		// Killed while creating: startup takes about a second, then the port and the
		// floating IP are made within the next.
		c.start(t)
		time.Sleep(time.Duration(rng.IntN(2500)) * time.Millisecond)
		c.kill()
		c.start(t)
		waitFor(t, k8s, ns, fmt.Sprintf("cycle %d: allocated after a restart", i), 2*time.Minute, allocated)

		// Killed while deleting.
		if err := k8s.Delete(context.Background(), lb); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		c.kill()
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(lb), lb); err == nil {
			c.start(t)
			waitGone(t, k8s, ns)
		}
		c.kill()
		if p, f := cloudCount(t, ns); p != 0 || f != 0 {
			t.Fatalf("cycle %d: %d ports and %d floating IPs left", i, p, f)
		}
	}
}
