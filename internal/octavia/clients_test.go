package octavia_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/listeners"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/loadbalancers"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/pools"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/quotas"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestTheCallsClientsMake makes, through gophercloud, the calls that cloud-provider-openstack,
// Terraform's openstack_lb_* resources and the openstack CLI make beyond the seed's: version
// discovery, tags and their filters, a parent's ID as a filter, the batch member update,
// members with subnet_id and without a name, null unsetting a field, the provider read back
// as written, a failed fully populated create leaving nothing, and Octavia-shaped errors on
// paths l4lb does not serve.
func TestTheCallsClientsMake(t *testing.T) {
	defer catch(t)
	l := newLab(t)
	ctx := l.ctx
	alice := l.lb("alice")

	// Version discovery: the newest version is the last listed (OCCM turns on timeouts,
	// tags and allowed_cidrs by it).
	var versions struct {
		Versions []struct{ ID, Status string } `json:"versions"`
	}
	_, err := alice.Get(ctx, l.url+"/", &versions, &gophercloud.RequestOpts{OkCodes: []int{200}})
	mustDo(err)
	if n := len(versions.Versions); n == 0 || versions.Versions[n-1].ID != "v2.13" || versions.Versions[n-1].Status != "CURRENT" {
		t.Fatalf("versions: %+v; want v2.13 CURRENT last", versions.Versions)
	}

	// Unnamed, tagged, provider "amphora" (Terraform's default): each reads back as written.
	tags := []string{"kube_service_cluster_ns_svc", "team-a"}
	lb := must(loadbalancers.Create(ctx, alice, loadbalancers.CreateOpts{VipAddress: "198.51.100.30", Provider: "amphora", Tags: tags}).Extract())
	got := must(loadbalancers.Get(ctx, alice, lb.ID).Extract())
	if got.Name != "" || got.Provider != "amphora" || !slices.Equal(got.Tags, tags) {
		t.Fatalf("read back: name %q, provider %q, tags %v; want \"\", amphora, %v", got.Name, got.Provider, got.Tags, tags)
	}
	for _, tc := range []struct {
		opts loadbalancers.ListOpts
		want int
	}{{loadbalancers.ListOpts{Tags: []string{"team-a"}}, 1}, {loadbalancers.ListOpts{Tags: []string{"team-a", "other"}}, 0},
		{loadbalancers.ListOpts{TagsAny: []string{"team-a", "other"}}, 1}} {
		if n := len(must(loadbalancers.ExtractLoadBalancers(must(loadbalancers.List(alice, tc.opts).AllPages(ctx))))); n != tc.want {
			t.Fatalf("list with %+v: %d load balancers, want %d", tc.opts, n, tc.want)
		}
	}
	var enabled struct {
		LBs []map[string]any `json:"loadbalancers"`
	}
	_, err = alice.Get(ctx, l.url+"/v2.0/lbaas/loadbalancers?admin_state_up=True", &enabled, &gophercloud.RequestOpts{OkCodes: []int{200}})
	mustDo(err)
	if len(enabled.LBs) != 1 {
		t.Fatalf("?admin_state_up=True (the CLI's list --enable): %d load balancers, want 1", len(enabled.LBs))
	}
	// Tags changed in place, then the description unset with null (the CLI's unset).
	must(loadbalancers.Update(ctx, alice, lb.ID, loadbalancers.UpdateOpts{Tags: &[]string{"team-b"}, Description: ptr("temporary")}).Extract())
	_, err = alice.Put(ctx, l.url+"/v2.0/lbaas/loadbalancers/"+lb.ID, map[string]any{"loadbalancer": map[string]any{"description": nil}},
		nil, &gophercloud.RequestOpts{OkCodes: []int{200}})
	mustDo(err)
	if got := must(loadbalancers.Get(ctx, alice, lb.ID).Extract()); got.Description != "" || !slices.Equal(got.Tags, []string{"team-b"}) {
		t.Fatalf("after the update and unset: description %q, tags %v", got.Description, got.Tags)
	}

	li := must(listeners.Create(ctx, alice, listeners.CreateOpts{Protocol: listeners.ProtocolTCP, ProtocolPort: 80, LoadbalancerID: lb.ID}).Extract())
	p := must(pools.Create(ctx, alice, pools.CreateOpts{ListenerID: li.ID, Protocol: pools.ProtocolTCP, LBMethod: pools.LBMethodRoundRobin}).Extract())
	// OCCM's reconcile lists a load balancer's listeners and pools by its ID.
	if ls := must(listeners.ExtractListeners(must(listeners.List(alice, listeners.ListOpts{LoadbalancerID: lb.ID}).AllPages(ctx)))); len(ls) != 1 || ls[0].ID != li.ID {
		t.Fatalf("listeners of the load balancer: %+v", ls)
	}
	if ps := must(pools.ExtractPools(must(pools.List(alice, pools.ListOpts{LoadbalancerID: lb.ID}).AllPages(ctx)))); len(ps) != 1 || ps[0].ID != p.ID {
		t.Fatalf("pools of the load balancer: %+v", ps)
	}
	if ps := must(pools.ExtractPools(must(pools.List(alice, pools.ListOpts{LoadbalancerID: "00000000-0000-0000-0000-000000000000"}).AllPages(ctx)))); len(ps) != 0 {
		t.Fatalf("pools of another load balancer: %+v", ps)
	}

	// The batch member update, as OCCM and openstack_lb_members_v2 send it.
	subnet := "7f6b7a4e-0000-4000-8000-000000000001"
	batch := func(ms ...pools.BatchUpdateMemberOpts) {
		t.Helper()
		// gophercloud takes 202 only, as Octavia answers it.
		mustDo(pools.BatchUpdateMembers(ctx, alice, p.ID, ms).Err)
	}
	members := func() map[string]pools.Member {
		out := map[string]pools.Member{}
		for _, m := range must(pools.ExtractMembers(must(pools.ListMembers(alice, p.ID, nil).AllPages(ctx)))) {
			out[fmt.Sprintf("%s:%d", m.Address, m.ProtocolPort)] = m
		}
		return out
	}
	batch(pools.BatchUpdateMemberOpts{Address: "127.0.0.11", ProtocolPort: 8080, Name: ptr("node-1"), SubnetID: &subnet},
		pools.BatchUpdateMemberOpts{Address: "127.0.0.12", ProtocolPort: 8080, SubnetID: &subnet})
	first := members()
	if len(first) != 2 || first["127.0.0.11:8080"].Name != "node-1" || first["127.0.0.12:8080"].Name != "" || first["127.0.0.12:8080"].SubnetID != subnet {
		t.Fatalf("after the first batch: %+v", first)
	}
	batch(pools.BatchUpdateMemberOpts{Address: "127.0.0.11", ProtocolPort: 8080, Name: ptr("node-1"), Weight: ptr(7), SubnetID: &subnet},
		pools.BatchUpdateMemberOpts{Address: "127.0.0.13", ProtocolPort: 8080, SubnetID: &subnet})
	second := members()
	kept := second["127.0.0.11:8080"]
	if len(second) != 2 || kept.ID != first["127.0.0.11:8080"].ID || kept.Weight != 7 {
		t.Fatalf("after the second batch (one kept with weight 7, one replaced): %+v", second)
	}
	if _, gone := second["127.0.0.12:8080"]; gone {
		t.Fatal("a member left out of the batch stayed")
	}
	// Renamed and tagged (Terraform's member_v2, the CLI's member set): the same member, by
	// its ID, with its new name and tags; a batch renaming it keeps the ID too.
	renamed := must(pools.UpdateMember(ctx, alice, p.ID, kept.ID, pools.UpdateMemberOpts{Name: ptr("node-1-renamed"), Tags: []string{"zone-a"}}).Extract())
	if renamed.ID != kept.ID {
		t.Fatalf("a rename changed the member's ID: %s -> %s", kept.ID, renamed.ID)
	}
	got1 := must(pools.GetMember(ctx, alice, p.ID, kept.ID).Extract())
	if got1.Name != "node-1-renamed" || !slices.Equal(got1.Tags, []string{"zone-a"}) || got1.Weight != 7 {
		t.Fatalf("the renamed member reads back %+v", got1)
	}
	batch(pools.BatchUpdateMemberOpts{Address: "127.0.0.11", ProtocolPort: 8080, Name: ptr("node-1"), SubnetID: &subnet})
	if third := members(); len(third) != 1 || third["127.0.0.11:8080"].ID != kept.ID || third["127.0.0.11:8080"].Name != "node-1" {
		t.Fatalf("after a batch renaming it back: %+v", third)
	}

	// A fully populated create that fails part-way leaves nothing behind.
	_, err = loadbalancers.Create(ctx, alice, loadbalancers.CreateOpts{Name: "half", VipAddress: "198.51.100.31",
		Listeners: []listeners.CreateOpts{{Protocol: listeners.ProtocolTCP, ProtocolPort: 80,
			DefaultPool: &pools.CreateOpts{Protocol: pools.ProtocolHTTP, LBMethod: pools.LBMethodRoundRobin}}}}).Extract()
	wantCode(t, err, http.StatusBadRequest, "a fully populated create with an HTTP pool")
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		left := must(loadbalancers.ExtractLoadBalancers(must(loadbalancers.List(alice, loadbalancers.ListOpts{Name: "half"}).AllPages(ctx))))
		if len(left) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("a failed fully populated create left %+v", left)
		}
	}

	// What l4lb has none of is an empty list; what it does not serve, Octavia's error body.
	var flavors struct {
		Flavors []any `json:"flavors"`
	}
	_, err = alice.Get(ctx, l.url+"/v2.0/lbaas/flavors", &flavors, &gophercloud.RequestOpts{OkCodes: []int{200}})
	mustDo(err)
	var fault map[string]any
	_, err = alice.Get(ctx, l.url+"/v2/octavia/nothing-here", &fault, &gophercloud.RequestOpts{OkCodes: []int{404}})
	mustDo(err)
	if fault["faultcode"] != "Client" || fault["faultstring"] == "" {
		t.Fatalf("an unknown path answered %v; want Octavia's fault body", fault)
	}
	mustDo(loadbalancers.Delete(context.Background(), alice, lb.ID, loadbalancers.DeleteOpts{Cascade: true}).ExtractErr())

	// Quotas (Terraform's openstack_lb_quota_v2): an administrator sets them, the project
	// reads them, they are the namespace's ResourceQuota, which the API server enforces.
	alpha := l.proj["alpha"]
	if q := must(quotas.Get(ctx, alice, alpha).Extract()); q.Loadbalancer != -1 || q.Listener != -1 {
		t.Fatalf("default quotas: %+v; want -1 (unlimited)", q)
	}
	_, err = quotas.Update(ctx, alice, alpha, quotas.UpdateOpts{Loadbalancer: ptr(3)}).Extract()
	wantCode(t, err, http.StatusForbidden, "a project member setting its own quota")
	_, err = quotas.Get(ctx, l.lb("bob"), alpha).Extract()
	wantCode(t, err, http.StatusForbidden, "another project reading alpha's quota")
	set := must(quotas.Update(ctx, l.lb("ada"), alpha, quotas.UpdateOpts{Loadbalancer: ptr(3), Listener: ptr(10), Healthmonitor: ptr(-1)}).Extract())
	if set.Loadbalancer != 3 || set.Listener != 10 || set.Healthmonitor != -1 {
		t.Fatalf("quotas after the update: %+v", set)
	}
	if q := must(quotas.Get(ctx, alice, alpha).Extract()); q.Loadbalancer != 3 || q.Listener != 10 {
		t.Fatalf("alpha reads its quotas as %+v", q)
	}
	var rqs corev1.ResourceQuotaList
	mustDo(l.k8s.List(ctx, &rqs, client.InNamespace("openstack-"+alpha)))
	if len(rqs.Items) != 1 || rqs.Items[0].Spec.Hard.Name("count/loadbalancers.lb.l4lb.io", resource.DecimalSI).Value() != 3 {
		t.Fatalf("the namespace's ResourceQuotas: %+v", rqs.Items)
	}
	// Members live inside pools, where no ResourceQuota counts them: their quota is the API's
	// to enforce, as Octavia enforces its quotas, on every call that adds members.
	if q := must(quotas.Update(ctx, l.lb("ada"), alpha, quotas.UpdateOpts{Member: ptr(2)}).Extract()); q.Member != 2 || q.Loadbalancer != 3 {
		t.Fatalf("quotas after setting the member quota: %+v", q)
	}
	qlb := must(loadbalancers.Create(ctx, alice, loadbalancers.CreateOpts{VipAddress: "198.51.100.32"}).Extract())
	member := func(last int) pools.CreateMemberOpts {
		return pools.CreateMemberOpts{Address: fmt.Sprintf("127.0.0.%d", last), ProtocolPort: 80}
	}
	qp := must(pools.Create(ctx, alice, pools.CreateOpts{LoadbalancerID: qlb.ID, Protocol: pools.ProtocolTCP,
		LBMethod: pools.LBMethodRoundRobin, Members: []pools.CreateMemberOpts{member(21)}}).Extract())
	must(pools.CreateMember(ctx, alice, qp.ID, member(22)).Extract())
	_, err = pools.CreateMember(ctx, alice, qp.ID, member(23)).Extract()
	wantCode(t, err, http.StatusForbidden, "a third member over a member quota of 2")
	if !strings.Contains(err.Error(), "Quota has been met") {
		t.Fatalf("the member quota's 403 does not say so: %v", err)
	}
	three := []pools.BatchUpdateMemberOpts{{Address: "127.0.0.21", ProtocolPort: 80}, {Address: "127.0.0.22", ProtocolPort: 80}, {Address: "127.0.0.23", ProtocolPort: 80}}
	wantCode(t, pools.BatchUpdateMembers(ctx, alice, qp.ID, three).Err, http.StatusForbidden, "a batch of three members over a member quota of 2")
	_, err = pools.Create(ctx, alice, pools.CreateOpts{LoadbalancerID: qlb.ID, Protocol: pools.ProtocolUDP,
		LBMethod: pools.LBMethodRoundRobin, Members: []pools.CreateMemberOpts{member(24)}}).Extract()
	wantCode(t, err, http.StatusForbidden, "a new pool with a member over a member quota of 2")
	mustDo(pools.BatchUpdateMembers(ctx, alice, qp.ID, three[1:]).Err) // two: within it
	if ms := must(pools.ExtractMembers(must(pools.ListMembers(alice, qp.ID, nil).AllPages(ctx)))); len(ms) != 2 {
		t.Fatalf("members after the refusals and a batch of two: %+v", ms)
	}
	_, err = l.lb("ada").Delete(ctx, l.url+"/v2.0/lbaas/quotas/"+alpha, &gophercloud.RequestOpts{OkCodes: []int{202}})
	mustDo(err)
	if q := must(quotas.Get(ctx, alice, alpha).Extract()); q.Loadbalancer != -1 || q.Member != -1 {
		t.Fatalf("after the reset: %+v", q)
	}
	must(pools.CreateMember(ctx, alice, qp.ID, member(24)).Extract()) // no quota: taken
	mustDo(loadbalancers.Delete(context.Background(), alice, qlb.ID, loadbalancers.DeleteOpts{Cascade: true}).ExtractErr())
}
