// Package podowner makes the Leases l4lb's processes keep (the controller's leader election,
// the dataplane nodes') belong to the pod that keeps them, so that Kubernetes' garbage
// collector removes them with the pod: `helm uninstall` and `kubectl delete -k` leave none
// behind, although the process's own RBAC is gone before it could delete them itself.
package podowner

import (
	"context"
	"os"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
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

// LeaseLock is client-go's Lease lock for leader election, with this pod written as the
// Lease's owner by every create and every renewal. Setting the owner once after winning is not
// enough: the garbage collector may delete the Lease for the previous leader's pod just after
// this one took it over, and the election then recreates it; written with every write, the
// recreated Lease has its owner too, and an uninstall leaves none behind.
func LeaseLock(leases coordinationv1client.LeasesGetter, key types.NamespacedName, identity string) resourcelock.Interface {
	return &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Client:     ownedLeases{leases},
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
}

type ownedLeases struct {
	coordinationv1client.LeasesGetter
}

func (o ownedLeases) Leases(namespace string) coordinationv1client.LeaseInterface {
	return ownedLease{o.LeasesGetter.Leases(namespace)}
}

// ownedLease is the Lease client the lock writes through: what it creates and updates is
// this pod's.
type ownedLease struct {
	coordinationv1client.LeaseInterface
}

func (o ownedLease) Create(ctx context.Context, l *coordinationv1.Lease, opts metav1.CreateOptions) (*coordinationv1.Lease, error) {
	Set(l)
	return o.LeaseInterface.Create(ctx, l, opts)
}

func (o ownedLease) Update(ctx context.Context, l *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	Set(l)
	return o.LeaseInterface.Update(ctx, l, opts)
}
