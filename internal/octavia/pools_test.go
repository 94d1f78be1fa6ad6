package octavia_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/listeners"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/loadbalancers"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/monitors"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/pools"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// TestPoolsBelongToLoadBalancers drives Octavia's model of pools as Octavia's API tests and
// Terraform's openstack_lb_pool_v2 do: a pool made on a load balancer alone (with a monitor,
// ACTIVE and OFFLINE), taken by a listener as its default_pool_id, moved off with null, one
// default pool per listener and one listener per pool, a listener deleted while its pool stays,
// and a load balancer with pools deleted only by cascade.
func TestPoolsBelongToLoadBalancers(t *testing.T) {
	defer catch(t)
	l := newLab(t)
	ctx := l.ctx
	alice := l.lb("alice")

	lb := must(loadbalancers.Create(ctx, alice, loadbalancers.CreateOpts{Name: "web", VipAddress: "198.51.100.25"}).Extract())
	p := must(pools.Create(ctx, alice, pools.CreateOpts{LoadbalancerID: lb.ID, Protocol: pools.ProtocolTCP, LBMethod: pools.LBMethodRoundRobin, Name: "spare"}).Extract())
	if len(p.Loadbalancers) != 1 || p.Loadbalancers[0].ID != lb.ID || len(p.Listeners) != 0 {
		t.Fatalf("a pool made on a load balancer: loadbalancers %v, listeners %v", p.Loadbalancers, p.Listeners)
	}
	must(monitors.Create(ctx, alice, monitors.CreateOpts{PoolID: p.ID, Type: monitors.TypeTCP, Delay: 5, Timeout: 3, MaxRetries: 2}).Extract())
	// Octavia's API tests wait for ACTIVE and then want OFFLINE: nothing serves the pool yet.
	settled := func(what string, ok func(*pools.Pool) bool) *pools.Pool {
		t.Helper()
		for end := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
			got := must(pools.Get(ctx, alice, p.ID).Extract())
			if got.ProvisioningStatus == "ACTIVE" && ok(got) {
				return got
			}
			if time.Now().After(end) {
				t.Fatalf("the pool is not %s in a minute: %+v", what, got)
			}
		}
	}
	settled("ACTIVE and OFFLINE", func(p *pools.Pool) bool { return p.OperatingStatus == "OFFLINE" })

	// A listener takes the pool at its creation, and gives it up with null.
	li := must(listeners.Create(ctx, alice, listeners.CreateOpts{Protocol: listeners.ProtocolTCP, ProtocolPort: 80, LoadbalancerID: lb.ID, DefaultPoolID: p.ID}).Extract())
	if li.DefaultPoolID != p.ID {
		t.Fatalf("a listener made with default_pool_id reads back %q", li.DefaultPoolID)
	}
	got := settled("ONLINE behind its listener", func(p *pools.Pool) bool { return p.OperatingStatus == "ONLINE" })
	if len(got.Listeners) != 1 || got.Listeners[0].ID != li.ID {
		t.Fatalf("the pool's listeners: %v", got.Listeners)
	}
	_, err := pools.Create(ctx, alice, pools.CreateOpts{ListenerID: li.ID, Protocol: pools.ProtocolTCP, LBMethod: pools.LBMethodRoundRobin}).Extract()
	wantCode(t, err, http.StatusConflict, "a second default pool for a listener")
	other := must(listeners.Create(ctx, alice, listeners.CreateOpts{Protocol: listeners.ProtocolTCP, ProtocolPort: 81, LoadbalancerID: lb.ID}).Extract())
	_, err = listeners.Update(ctx, alice, other.ID, listeners.UpdateOpts{DefaultPoolID: &p.ID}).Extract()
	wantCode(t, err, http.StatusConflict, "a pool already serving a listener as another's default pool")
	udp := must(pools.Create(ctx, alice, pools.CreateOpts{LoadbalancerID: lb.ID, Protocol: pools.ProtocolUDP, LBMethod: pools.LBMethodRoundRobin}).Extract())
	_, err = listeners.Update(ctx, alice, other.ID, listeners.UpdateOpts{DefaultPoolID: &udp.ID}).Extract()
	wantCode(t, err, http.StatusBadRequest, "a UDP pool as a TCP listener's default pool")
	// Allowed CIDRs of the VIP's IP version only, as Octavia checks (its API tests do).
	_, err = listeners.Update(ctx, alice, other.ID, listeners.UpdateOpts{AllowedCIDRs: &[]string{"192.0.2.0/24", "2001:db8::/32"}}).Extract()
	wantCode(t, err, http.StatusBadRequest, "an IPv6 allowed CIDR on an IPv4 VIP")

	_, err = alice.Put(ctx, l.url+"/v2.0/lbaas/listeners/"+li.ID, map[string]any{"listener": map[string]any{"default_pool_id": nil}},
		nil, &gophercloud.RequestOpts{OkCodes: []int{200}})
	mustDo(err)
	if got := must(listeners.Get(ctx, alice, li.ID).Extract()); got.DefaultPoolID != "" {
		t.Fatalf("default_pool_id after null: %q", got.DefaultPoolID)
	}
	settled("OFFLINE once its listener let it go", func(p *pools.Pool) bool { return p.OperatingStatus == "OFFLINE" && len(p.Listeners) == 0 })
	// The other listener takes it instead.
	must(listeners.Update(ctx, alice, other.ID, listeners.UpdateOpts{DefaultPoolID: &p.ID}).Extract())
	settled("serving the other listener", func(p *pools.Pool) bool { return len(p.Listeners) == 1 && p.Listeners[0].ID == other.ID })

	// Deleting the listener leaves its pool on the load balancer.
	mustDo(listeners.Delete(ctx, alice, other.ID).ExtractErr())
	got = settled("on its load balancer after its listener went", func(p *pools.Pool) bool { return len(p.Listeners) == 0 })
	if len(got.Loadbalancers) != 1 || got.Loadbalancers[0].ID != lb.ID {
		t.Fatalf("the pool's load balancers after its listener went: %v", got.Loadbalancers)
	}
	if ps := must(pools.ExtractPools(must(pools.List(alice, pools.ListOpts{LoadbalancerID: lb.ID}).AllPages(ctx)))); len(ps) != 2 {
		t.Fatalf("pools of the load balancer: %d, want 2", len(ps))
	}

	// Failover, an administrator's call (Octavia's policy): the VIP moves off its holder.
	_, err = alice.Put(ctx, l.url+"/v2/lbaas/loadbalancers/"+lb.ID+"/failover", nil, nil, &gophercloud.RequestOpts{OkCodes: []int{202}})
	wantCode(t, err, http.StatusForbidden, "a project member's failover")
	var obj lbv1.LoadBalancerList
	mustDo(l.k8s.List(ctx, &obj))
	if len(obj.Items) != 1 || obj.Items[0].Status.Holder == "" {
		t.Fatalf("the load balancer's holder before the failover: %+v", obj.Items)
	}
	mustDo(loadbalancers.Failover(ctx, l.lb("ada"), lb.ID).ExtractErr())
	mustDo(l.k8s.List(ctx, &obj))
	if from := obj.Items[0].Annotations[lbv1.FailoverAnnotation]; from != obj.Items[0].Status.Holder {
		t.Fatalf("the failover moves the VIP off %q; its holder is %q", from, obj.Items[0].Status.Holder)
	}

	// Pools are children: the load balancer goes only with cascade, and they go with it.
	mustDo(listeners.Delete(ctx, alice, li.ID).ExtractErr())
	err = loadbalancers.Delete(ctx, alice, lb.ID, loadbalancers.DeleteOpts{}).ExtractErr()
	wantCode(t, err, http.StatusBadRequest, "deleting a load balancer that has pools")
	mustDo(loadbalancers.Delete(context.Background(), alice, lb.ID, loadbalancers.DeleteOpts{Cascade: true}).ExtractErr())
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		left := must(pools.ExtractPools(must(pools.List(alice, pools.ListOpts{}).AllPages(ctx))))
		if len(left) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("a cascade delete left %d pools", len(left))
		}
	}
}
