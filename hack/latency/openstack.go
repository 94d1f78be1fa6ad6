package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/ipam/neutron"
	"github.com/l4lb/l4lb/test/cloudtest"
	"github.com/l4lb/l4lb/test/testenv"
)

// runOpenStack measures apply -> floating IP associated for n load balancers on the seed's
// networks of the local Keystone and Neutron, then deletes them.
func runOpenStack(ctx context.Context, env *testenv.Env, n int) error {
	clouds, down, err := cloudtest.Up()
	if err != nil {
		return err
	}
	defer down()
	c := env.Client
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "openstack"},
		Data: map[string][]byte{"clouds.yaml": clouds, "cloud": []byte("l4lb-local")}}
	if err := c.Create(ctx, secret); err != nil {
		return err
	}
	if _, err := env.Run(ctx, testenv.ControlPlane{DefaultProvider: lbv1.ProviderOpenStack,
		Providers: func(mgr ctrl.Manager) map[lbv1.Provider]ipam.Provider {
			return map[lbv1.Provider]ipam.Provider{lbv1.ProviderOpenStack: neutron.New(mgr, client.ObjectKeyFromObject(secret), "openstack", "latency")}
		}}); err != nil {
		return err
	}
	time.Sleep(time.Second)

	var took []time.Duration
	for i := range n {
		lb := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("lb%d", i)},
			Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderOpenStack, VIP: &lbv1.VIP{Subnet: "private-subnet"},
				FloatingIP: &lbv1.FloatingIP{Network: "public-net"}}}
		start := time.Now()
		if err := c.Create(ctx, lb); err != nil {
			return err
		}
		for {
			if err := c.Get(ctx, client.ObjectKeyFromObject(lb), lb); err != nil {
				return err
			}
			if lb.Status.FloatingIPAddress != "" {
				took = append(took, time.Since(start))
				break
			}
			if time.Since(start) > time.Minute {
				return fmt.Errorf("%s: no floating IP after a minute: %+v", lb.Name, lb.Status.Conditions)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for i := range n {
		c.Delete(ctx, &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("lb%d", i)}})
	}
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		var left lbv1.LoadBalancerList
		if c.List(ctx, &left); len(left.Items) == 0 {
			break
		}
	}
	slices.Sort(took)
	fmt.Printf("| OpenStack, %d load balancers | p50 | p99 | max |\n|---|---|---|---|\n", n)
	fmt.Printf("| apply LoadBalancer -> floating IP associated with the VIP port | %v | %v | %v |\n", pct(took, 50), pct(took, 99), took[len(took)-1].Round(time.Millisecond))
	return nil
}
