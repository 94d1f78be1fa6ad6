package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/listeners"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/loadbalancers"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/pools"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/octavia"
	"github.com/l4lb/l4lb/internal/openstack"
	"github.com/l4lb/l4lb/test/cloudtest"
	"github.com/l4lb/l4lb/test/testenv"
)

// runOctavia measures l4lb's Octavia API against Neutron's API in the same run: the same
// Keystone, the same token (each service validates it with Keystone and caches that), n
// creates, shows and lists each (a load balancer against a port); and a load balancer's
// create -> ACTIVE, which Octavia takes minutes for.
func runOctavia(ctx context.Context, env *testenv.Env, n int) error {
	clouds, down, err := cloudtest.Up()
	if err != nil {
		return err
	}
	defer down()
	cp, stopControlPlane := context.WithCancel(ctx)
	defer stopControlPlane()
	if _, err := env.Run(cp, testenv.ControlPlane{AgentNode: "bench"}); err != nil {
		return err
	}
	if err := env.Client.Create(ctx, &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{"198.51.100.0/24"}}}); err != nil {
		return err
	}
	creds, err := openstack.FromSecret(map[string][]byte{"clouds.yaml": clouds, "cloud": []byte("l4lb-local")}, "")
	if err != nil {
		return err
	}
	ks := &openstack.Keystone{Credentials: func(context.Context) (openstack.Credentials, error) { return creds, nil }, CacheFor: openstack.DefaultTokenCache}
	srv := httptest.NewServer((&octavia.Server{Client: env.Client, Validate: ks.Validate, CreateNamespaces: true,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Handler())
	defer srv.Close()
	netc, err := openstack.Network(ctx, creds)
	if err != nil {
		return err
	}
	lbc := &gophercloud.ServiceClient{ProviderClient: netc.ProviderClient, Endpoint: srv.URL + "/", ResourceBase: srv.URL + "/v2/"}
	pages, err := networks.List(netc, networks.ListOpts{Name: "private-net"}).AllPages(ctx)
	if err != nil {
		return err
	}
	nets, err := networks.ExtractNetworks(pages)
	if err != nil || len(nets) != 1 {
		return fmt.Errorf("private-net: %d networks, %v", len(nets), err)
	}

	timed := func(d *[]time.Duration, f func() error) error {
		start := time.Now()
		err := f()
		*d = append(*d, time.Since(start))
		return err
	}
	var lbCreate, lbActive, lbShow, lbList, portCreate, portShow, portList []time.Duration
	var lbIDs, portIDs []string
	defer func() {
		for _, id := range lbIDs {
			loadbalancers.Delete(context.Background(), lbc, id, loadbalancers.DeleteOpts{Cascade: true})
		}
		for _, id := range portIDs {
			ports.Delete(context.Background(), netc, id)
		}
	}()
	for i := range n {
		var lb *loadbalancers.LoadBalancer
		start := time.Now()
		if err := timed(&lbCreate, func() (err error) {
			lb, err = loadbalancers.Create(ctx, lbc, loadbalancers.CreateOpts{Name: fmt.Sprintf("bench_%d", i), VipAddress: fmt.Sprintf("198.51.100.%d", 10+i)}).Extract()
			return err
		}); err != nil {
			return err
		}
		lbIDs = append(lbIDs, lb.ID)
		for lb.ProvisioningStatus != "ACTIVE" {
			if time.Since(start) > time.Minute {
				return fmt.Errorf("%s is %s a minute on", lb.Name, lb.ProvisioningStatus)
			}
			time.Sleep(10 * time.Millisecond)
			if lb, err = loadbalancers.Get(ctx, lbc, lb.ID).Extract(); err != nil {
				return err
			}
		}
		lbActive = append(lbActive, time.Since(start))
		var p *ports.Port
		if err := timed(&portCreate, func() (err error) {
			p, err = ports.Create(ctx, netc, ports.CreateOpts{NetworkID: nets[0].ID, Name: fmt.Sprintf("bench_%d", i)}).Extract()
			return err
		}); err != nil {
			return err
		}
		portIDs = append(portIDs, p.ID)
	}
	for i := range n {
		if err := timed(&lbShow, func() error { return loadbalancers.Get(ctx, lbc, lbIDs[i]).Err }); err != nil {
			return err
		}
		if err := timed(&portShow, func() error { return ports.Get(ctx, netc, portIDs[i]).Err }); err != nil {
			return err
		}
		if err := timed(&lbList, func() error { _, err := loadbalancers.List(lbc, nil).AllPages(ctx); return err }); err != nil {
			return err
		}
		if err := timed(&portList, func() error { _, err := ports.List(netc, nil).AllPages(ctx); return err }); err != nil {
			return err
		}
	}
	fmt.Printf("| Octavia API, %d objects | l4lb p50 | l4lb p99 | Neutron p50 | Neutron p99 | l4lb / Neutron (p50) |\n|---|---|---|---|---|---|\n", n)
	for _, row := range []struct {
		name       string
		l4lb, peer []time.Duration
	}{
		{"create (load balancer / port)", lbCreate, portCreate},
		{"show", lbShow, portShow},
		{fmt.Sprintf("list (all %d)", n), lbList, portList},
	} {
		slices.Sort(row.l4lb)
		slices.Sort(row.peer)
		fmt.Printf("| %s | %v | %v | %v | %v | %.2f |\n", row.name, pct(row.l4lb, 50), pct(row.l4lb, 99), pct(row.peer, 50), pct(row.peer, 99),
			float64(median(row.l4lb))/float64(median(row.peer)))
	}
	slices.Sort(lbActive)
	fmt.Printf("| load balancer create -> ACTIVE | %v | %v | (Octavia: minutes) | | |\n", pct(lbActive, 50), pct(lbActive, 99))

	// One project grown to 100, then 1,000 load balancers of the scale target's shape, made
	// through the Kubernetes API (the Octavia API's create is measured above), the controllers
	// stopped so that the lists are timed alone.
	var existing lbv1.LoadBalancerList // the project's namespace is the one its creates made
	if err := env.Client.List(ctx, &existing); err != nil || len(existing.Items) == 0 {
		return fmt.Errorf("the project's load balancers: %d, %v", len(existing.Items), err)
	}
	ns := existing.Items[0].Namespace
	stopControlPlane()
	fmt.Printf("\n| one project's list, median of 5 | load balancers | listeners | pools |\n|---|---|---|---|\n")
	made := 0
	for _, size := range []int{100, 1000} {
		for ; made < size; made++ {
			for _, o := range testenv.ScaleTree(ns, fmt.Sprintf("scale%d", made), "198.51.100") {
				if err := env.Client.Create(ctx, o); err != nil {
					return err
				}
			}
		}
		row := fmt.Sprintf("| %d load balancers, %d listeners, %d pools", size+n, 2*size, 2*size)
		for _, list := range []func() error{
			func() error { _, err := loadbalancers.List(lbc, nil).AllPages(ctx); return err },
			func() error { _, err := listeners.List(lbc, nil).AllPages(ctx); return err },
			func() error { _, err := pools.List(lbc, nil).AllPages(ctx); return err },
		} {
			var took []time.Duration
			for range 5 {
				if err := timed(&took, list); err != nil {
					return err
				}
			}
			slices.Sort(took)
			row += fmt.Sprintf(" | %v", median(took).Round(100*time.Microsecond))
		}
		fmt.Println(row + " |")
	}
	return nil
}

func median(d []time.Duration) time.Duration { return d[len(d)/2] }
