package agent

import (
	"context"
	"log/slog"
	"os"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RestartsHere tells whether another agent will start on this node after this one (for
// Stopping.Restarts): its pod (POD_NAMESPACE, POD_NAME) belongs to a DaemonSet that stays (an
// upgrade or a deleted pod, not an uninstall). Not in a pod: no. When the API server cannot be
// reached, yes: the node's traffic comes first.
func RestartsHere(r client.Reader, log *slog.Logger) func(context.Context) bool {
	return func(ctx context.Context) bool {
		ns, name := os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME")
		if ns == "" || name == "" {
			return false
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		// Gone, or no longer allowed to look (an uninstall removes the RBAC with the
		// DaemonSet): nothing follows. Unreachable: something likely does.
		final := func(err error) bool {
			return apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err)
		}
		var pod corev1.Pod
		if err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod); err != nil {
			log.Warn("cannot read this agent's pod", "err", err)
			return !final(err)
		}
		owner := metav1.GetControllerOf(&pod)
		if owner == nil || owner.Kind != "DaemonSet" {
			return false
		}
		var ds appsv1.DaemonSet
		err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: owner.Name}, &ds)
		if err != nil {
			log.Warn("cannot read this agent's DaemonSet", "err", err)
			return !final(err)
		}
		return ds.UID == owner.UID && ds.DeletionTimestamp.IsZero()
	}
}
