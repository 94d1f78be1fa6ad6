package services

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/owned"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/watchdog"
)

// The Service controller reads Services and their endpoints, writes only the Services' status,
// and writes the l4lb objects it makes for them (the admission policy in config/policies lets
// it change only objects a Service controls).
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services/status,verbs=get;patch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=lb.l4lb.io,resources=loadbalancers;listeners;pools;healthmonitors,verbs=get;list;watch;create;patch;delete

// fieldManager owns, by server-side apply, the fields of the objects made for Services: a
// user's kubectl edit of another field stays.
const fieldManager = "l4lb-services"

// Reconciler keeps each Service of l4lb's class served by its objects.
type Reconciler struct {
	client.Client
	Recorder events.EventRecorder
	// DefaultClass serves LoadBalancer Services that name no class.
	DefaultClass bool
	// OpenStack: the controller's default provider is openstack (see Input.OpenStack).
	OpenStack bool
	// Watchdog, when set, watches every reconciliation (the controller's /healthz).
	Watchdog *watchdog.Watchdog
}

func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	bySlice := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		name := o.GetLabels()[discoveryv1.LabelServiceName]
		if name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
	})
	return ctrl.NewControllerManagedBy(mgr).Named("service").For(&corev1.Service{}).
		Owns(&lbv1.LoadBalancer{}).Owns(&lbv1.Listener{}).
		Watches(&discoveryv1.EndpointSlice{}, bySlice).
		Complete(r.Watchdog.Wrap("service", r))
}

func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var svc corev1.Service
	if err := r.Get(ctx, req.NamespacedName, &svc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if svc.DeletionTimestamp != nil { // the garbage collector deletes what it owns
		return ctrl.Result{}, nil
	}
	if !Serves(&svc, r.DefaultClass) {
		return ctrl.Result{}, r.release(ctx, &svc)
	}
	objs, err := r.desired(ctx, &svc)
	if err == nil {
		err = r.writer().Apply(ctx, &svc, objs)
	}
	var ref *owned.Refusal
	if errors.As(err, &ref) {
		reason := ref.Reason
		if reason == "Invalid" {
			reason = "InvalidService"
		}
		r.event(&svc, true, reason, "%v", ref.Err)
		return ctrl.Result{}, nil
	}
	if err != nil {
		r.event(&svc, true, "SyncLoadBalancerFailed", "%v", err)
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.report(ctx, &svc, objs)
}

// desired translates the Service and what it reads.
func (r *Reconciler) desired(ctx context.Context, svc *corev1.Service) (owned.Objects, error) {
	var slices discoveryv1.EndpointSliceList
	if err := r.List(ctx, &slices, client.InNamespace(svc.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
		return owned.Objects{}, err
	}
	in := Input{Service: svc, Slices: slices.Items, OpenStack: r.OpenStack}
	if r.OpenStack {
		mine, _, err := ipam.ReadPools(ctx, r.Client, svc.Namespace)
		if err != nil {
			return owned.Objects{}, err
		}
		for _, p := range mine {
			if len(p.FloatingIPNetworks) > 0 {
				in.FloatingNetwork = p.FloatingIPNetworks[0]
				break
			}
		}
	}
	objs, err := Translate(in)
	if err != nil {
		return objs, &owned.Refusal{Reason: "InvalidService", Err: err}
	}
	return objs, nil
}

// writer applies and prunes the objects of Services.
func (r *Reconciler) writer() *owned.Writer {
	return &owned.Writer{Client: r.Client, FieldManager: fieldManager, Label: ServiceLabel, Owner: corev1.SchemeGroupVersion.WithKind("Service")}
}

// release deletes what l4lb made for a Service it no longer serves (its type or class
// changed) and the addresses it wrote in its status.
func (r *Reconciler) release(ctx context.Context, svc *corev1.Service) error {
	var lb lbv1.LoadBalancer
	err := r.Get(ctx, client.ObjectKey{Namespace: svc.Namespace, Name: LoadBalancerName(svc.Name)}, &lb)
	if apierrors.IsNotFound(err) || (err == nil && !metav1.IsControlledBy(&lb, svc)) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := r.writer().Release(ctx, svc); err != nil {
		return err
	}
	if len(svc.Status.LoadBalancer.Ingress) > 0 {
		next := svc.DeepCopy()
		next.Status.LoadBalancer = corev1.LoadBalancerStatus{}
		if err := r.Status().Patch(ctx, next, client.MergeFrom(svc)); err != nil {
			return err
		}
	}
	r.event(svc, false, "DeletedLoadBalancer", "l4lb no longer serves this Service: deleted load balancer %s", lb.Name)
	return nil
}

// report writes the Service's status: the VIP (and the floating IP) once allocated, with each
// port's problem, if any.
func (r *Reconciler) report(ctx context.Context, svc *corev1.Service, objs owned.Objects) error {
	var lb lbv1.LoadBalancer
	if err := r.Get(ctx, client.ObjectKeyFromObject(&objs.LoadBalancer), &lb); err != nil {
		return client.IgnoreNotFound(err)
	}
	if c := meta.FindStatusCondition(lb.Status.Conditions, lbv1.ConditionVIPAllocated); c != nil && c.Status == metav1.ConditionFalse {
		r.event(svc, true, c.Reason, "load balancer %s: %s", lb.Name, c.Message)
	}
	var ports []corev1.PortStatus
	for _, l := range objs.Listeners {
		ps := corev1.PortStatus{Port: l.Spec.ProtocolPort, Protocol: corev1.Protocol(l.Spec.Protocol)}
		var cur lbv1.Listener
		if err := r.Get(ctx, client.ObjectKeyFromObject(&l), &cur); err == nil {
			if c := meta.FindStatusCondition(cur.Status.Conditions, lbv1.ConditionAccepted); c != nil && c.Status == metav1.ConditionFalse {
				ps.Error = ptr.To(c.Reason)
				r.event(svc, true, c.Reason, "port %d/%s: %s", l.Spec.ProtocolPort, l.Spec.Protocol, c.Message)
			}
		}
		ports = append(ports, ps)
	}
	// ipMode Proxy: the VIP's traffic goes to the l4lb dataplane, which balances it with the
	// pool's algorithm, monitor, allowed CIDRs and PROXY protocol. With VIP, kube-proxy takes
	// packets for the address on every node and DNATs them to the endpoints itself, around
	// l4lb (and, lagging behind a scale-down, to pods that have gone: refused connections).
	var ingress []corev1.LoadBalancerIngress
	for _, ip := range []string{lb.Status.FloatingIPAddress, lb.Status.VIPAddress} {
		if ip != "" {
			ingress = append(ingress, corev1.LoadBalancerIngress{IP: ip, IPMode: ptr.To(corev1.LoadBalancerIPModeProxy), Ports: ports})
		}
	}
	if equality.Semantic.DeepEqual(ingress, svc.Status.LoadBalancer.Ingress) {
		return nil
	}
	next := svc.DeepCopy()
	next.Status.LoadBalancer.Ingress = ingress
	if err := r.Status().Patch(ctx, next, client.MergeFrom(svc)); err != nil {
		return err
	}
	if len(ingress) > 0 {
		r.event(svc, false, "EnsuredLoadBalancer", "load balancer %s serves at %s", lb.Name, ingress[0].IP)
	}
	return nil
}

func (r *Reconciler) event(svc *corev1.Service, warning bool, reason, format string, args ...any) {
	if r.Recorder == nil {
		return
	}
	typ := corev1.EventTypeNormal
	if warning {
		typ = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(svc, nil, typ, reason, "Reconcile", format, args...)
}
