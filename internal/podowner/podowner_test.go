package podowner_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/l4lb/l4lb/internal/podowner"
	"github.com/l4lb/l4lb/test/testenv"
)

// TestTheElectionsLeaseIsAlwaysThePods runs client-go's leader election on the lock against a
// real API server, as the controller's manager does: the Lease it creates belongs to the pod,
// and so does the Lease it recreates after the garbage collector deleted it for a previous
// leader's pod (what left a Lease behind an uninstall when the owner was set once).
func TestTheElectionsLeaseIsAlwaysThePods(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "l4lb-system"}}
	if err := env.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", "l4lb-controller-abc")
	t.Setenv("POD_UID", "7b0c6e0e-0000-4000-8000-000000000001")
	leases, err := coordinationv1client.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: "l4lb-system", Name: "l4lb-controller.lb.l4lb.io"}
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          podowner.LeaseLock(leases, key, "the-leader"),
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond,
		Callbacks: leaderelection.LeaderCallbacks{OnStartedLeading: func(context.Context) {}, OnStoppedLeading: func() {}},
	})
	if err != nil {
		t.Fatal(err)
	}
	go elector.Run(ctx)

	// owned waits for the leader's Lease to have the pod as its one owner (renewals come every
	// RetryPeriod).
	owned := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			lease, err := leases.Leases(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
			if err == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == "the-leader" {
				o := lease.OwnerReferences
				if len(o) == 1 && o[0].Kind == "Pod" && o[0].Name == "l4lb-controller-abc" && o[0].UID == "7b0c6e0e-0000-4000-8000-000000000001" {
					return
				}
				err = fmt.Errorf("held by the leader, owned by %+v", o)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the Lease is not the pod's alone after 30 s: %v", what, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	owned("created")

	// The previous leader's pod was another: its owner reference is replaced on the next renewal.
	lease, err := leases.Leases(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lease.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "old", UID: "old-uid"}}
	if _, err := leases.Leases(key.Namespace).Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	owned("renewed after another pod's owner reference")

	// The garbage collector deletes it (for the old pod) just after the take-over.
	if err := leases.Leases(key.Namespace).Delete(ctx, key.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	owned("recreated after a deletion")
}
