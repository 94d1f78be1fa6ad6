// Package podowner makes the Leases l4lb's processes keep (the controller's leader election,
// the dataplane nodes') belong to the pod that keeps them, so that Kubernetes' garbage
// collector removes them with the pod: `helm uninstall` and `kubectl delete -k` leave none
// behind, although the process's own RBAC is gone before it could delete them itself.
package podowner

import (
	"context"
	"os"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Ref is the pod this process runs in, from the downward API (POD_NAME, POD_UID); nil when it
// does not run in a pod.
func Ref() *metav1.OwnerReference {
	name, uid := os.Getenv("POD_NAME"), os.Getenv("POD_UID")
	if name == "" || uid == "" {
		return nil
	}
	return &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: name, UID: types.UID(uid)}
}

// Set makes obj belong to the pod alone (a Lease kept by another pod before is this one's now).
func Set(obj metav1.Object) {
	if ref := Ref(); ref != nil {
		obj.SetOwnerReferences([]metav1.OwnerReference{*ref})
	}
}

// Lease is a manager Runnable (run by the leader only) that makes the named Lease belong to
// this pod once it leads.
type Lease struct {
	Reader client.Reader // uncached: an informer on Leases would need list and watch on all of them
	Client client.Client
	Key    client.ObjectKey
}

// Start sets the owner, and sets it again while this pod leads: the garbage collector may
// delete the Lease for its previous owner's pod just after this one took it over, and leader
// election then recreates it without an owner, which an uninstall would leave behind. Checked
// every second (one read on one Lease, by the leader only): at 5 s, an uninstall that came
// soon after an upgrade left the recreated Lease behind (CI, test/e2e).
func (l Lease) Start(ctx context.Context) error {
	ref := Ref()
	if ref == nil {
		return nil
	}
	for {
		var lease coordinationv1.Lease
		if err := l.Reader.Get(ctx, l.Key, &lease); err == nil {
			if o := lease.OwnerReferences; len(o) != 1 || o[0].UID != ref.UID {
				Set(&lease)
				l.Client.Update(ctx, &lease) // a conflict is tried again on the next turn
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
