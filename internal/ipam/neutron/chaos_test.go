package neutron

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/floatingips"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/test/cloudtest"
)

// leftovers counts this test cluster's ports and floating IPs, tagged or only described.
func leftovers(t *testing.T) (int, int) {
	t.Helper()
	ctx := context.Background()
	ps, err := listPorts(ctx, neutron, ports.ListOpts{})
	if err != nil {
		t.Fatal(err)
	}
	fs, err := listFloatingIPs(ctx, neutron, floatingips.ListOpts{})
	if err != nil {
		t.Fatal(err)
	}
	np, nf := 0, 0
	for _, p := range ps {
		if strings.HasPrefix(p.Description, "l4lb load balancer default/chaos-") {
			np++
		}
	}
	for _, f := range fs {
		if strings.HasPrefix(f.Description, "l4lb load balancer default/chaos-") {
			nf++
		}
	}
	return np, nf
}

// TestKilledMidwayLeaksNothing creates and deletes load balancers 50 times, each time cutting
// the controller off at a random point (its context cancelled mid-call, as a killed process
// would be), then lets a fresh provider, as after a restart, finish the job. Four load
// balancers go through it at once, as concurrent reconciliations do (and the cloud, mostly
// waited on, answers four at once in less time than one after the other).
func TestKilledMidwayLeaksNothing(t *testing.T) {
	needCloud(t)
	const cycles, workers = 50, 4
	type cycle struct {
		lb   *lbv1.LoadBalancer
		cuts [2]time.Duration // where the create and the delete are cut
	}
	rng := rand.New(rand.NewPCG(1, 2))
	todo := make(chan cycle, cycles)
	for range cycles {
		c := cycle{lb: seedLB(t), cuts: [2]time.Duration{time.Duration(rng.IntN(400)) * time.Millisecond, time.Duration(rng.IntN(400)) * time.Millisecond}}
		c.lb.Name = "chaos-" + c.lb.Name
		todo <- c
	}
	close(todo)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := range todo {
				for i, op := range []func(*Provider, context.Context) error{
					func(p *Provider, ctx context.Context) error { _, err := p.Allocate(ctx, c.lb); return err },
					func(p *Provider, ctx context.Context) error { return p.Release(ctx, c.lb) },
				} {
					killed, cancel := context.WithTimeout(context.Background(), c.cuts[i])
					op(testProvider(nil), killed) // may be cut anywhere
					cancel()
					if err := op(testProvider(nil), context.Background()); err != nil {
						t.Errorf("%s: after a restart: %v", c.lb.Name, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if np, nf := leftovers(t); np != 0 || nf != 0 {
		t.Fatalf("leaked %d ports and %d floating IPs", np, nf)
	}
}

func openstackScript(t *testing.T, cmd string) {
	t.Helper()
	if out, err := cloudtest.Script(cmd); err != nil {
		t.Fatalf("openstack.sh %s: %v\n%s", cmd, err, out)
	}
}

func TestNeutronGoneThenBackConvergesWithoutDuplicates(t *testing.T) {
	needCloud(t)
	ctx := context.Background()
	p := testProvider(nil)
	if _, err := p.client(ctx); err != nil { // authenticated before Neutron goes
		t.Fatal(err)
	}
	lb := seedLB(t)
	openstackScript(t, "stop-neutron")
	restarted := false
	defer func() {
		if !restarted {
			openstackScript(t, "start-neutron")
		}
	}()
	_, err := p.Allocate(ctx, lb)
	if ipam.Reason(err, "") != lbv1.ReasonProviderUnavailable {
		t.Fatalf("with Neutron down: %v (reason %q), want ProviderUnavailable", err, ipam.Reason(err, ""))
	}
	openstackScript(t, "start-neutron")
	restarted = true
	alloc, err := p.Allocate(ctx, lb)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(portsTagged(t, p, lb)); n != 1 || len(fipsOf(t, lb)) != 1 {
		t.Fatalf("%d ports and %d floating IPs after recovery, want one each", n, len(fipsOf(t, lb)))
	}
	if err := p.Release(ctx, lb); err != nil || alloc.Address == "" {
		t.Fatal(err)
	}
}
