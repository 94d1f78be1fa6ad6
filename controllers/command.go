package controllers

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/gateway"
	"github.com/l4lb/l4lb/controllers/services"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/ipam/neutron"
	"github.com/l4lb/l4lb/internal/manager"
	"github.com/l4lb/l4lb/internal/podowner"
	"github.com/l4lb/l4lb/internal/watchdog"
)

// leaderElectionID names the controller's leader election Lease.
const leaderElectionID = "l4lb-controller.lb.l4lb.io"

// Command is `l4lb controller`: it registers the controller's flags and returns what runs it.
func Command() func() error {
	metrics := flag.String("metrics-bind-address", ":8443", "address of the metrics endpoint (0 disables it)")
	metricsSecure := flag.Bool("metrics-secure", true, "serve metrics over HTTPS to clients that Kubernetes authenticates and authorises (get on the /metrics URL); false serves plain HTTP to anyone")
	probes := flag.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	pprof := flag.String("pprof-bind-address", "0", "address of Go's /debug/pprof (0 disables it; it needs no credentials, so keep it on loopback)")
	leaderElect := flag.Bool("leader-elect", false, "elect one active controller among replicas")
	leaderNamespace := flag.String("leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's)")
	defaultProvider := flag.String("default-provider", "static", "VIP provider for load balancers that name none: static or openstack")
	ranges := flag.String("vip-ranges", "", "comma-separated CIDRs the static provider allocates VIPs from")
	osSecret := flag.String("openstack-secret", "", "NAMESPACE/NAME of the Secret with OpenStack credentials (clouds.yaml or OS_* keys); enables the openstack provider")
	osCloud := flag.String("openstack-cloud", "openstack", "cloud of the clouds.yaml to use (the Secret's key \"cloud\" overrides it)")
	clusterID := flag.String("cluster-id", "kubernetes", "tag that tells this cluster's Neutron resources from other clusters'")
	serviceDefault := flag.Bool("service-default-class", false, "also serve LoadBalancer Services that name no spec.loadBalancerClass (as the cluster's only load-balancer implementation); Services of class "+services.Class+" are always served")
	return func() error {
		var prefixes []netip.Prefix
		for _, r := range strings.Split(*ranges, ",") {
			if r = strings.TrimSpace(r); r == "" {
				continue
			}
			p, err := netip.ParsePrefix(r)
			if err != nil {
				return fmt.Errorf("--vip-ranges: %w", err)
			}
			prefixes = append(prefixes, p)
		}
		cfg := ctrl.GetConfigOrDie()
		var lock resourcelock.Interface
		if *leaderElect {
			var err error
			if lock, err = leaderLock(cfg, *leaderNamespace); err != nil {
				return err
			}
		}
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{
			Scheme:                 manager.NewScheme(),
			Metrics:                manager.Metrics(*metrics, *metricsSecure),
			HealthProbeBindAddress: *probes,
			PprofBindAddress:       *pprof,
			// Managed fields are not kept in the cache: nothing here reads them, and the model
			// copies every object when it is built.
			Cache:          cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
			LeaderElection: *leaderElect,
			// The election's Lease goes with the leader's pod (podowner.LeaseLock says why).
			LeaderElectionResourceLockInterface: lock,
			// Stepping down ends the process, so a new leader never overlaps with this one.
			LeaderElectionReleaseOnCancel: true,
		})
		if err != nil {
			return err
		}
		static := ipam.NewStatic(prefixes, mgr.GetClient())
		// Every call a reconciliation makes has a timeout under two minutes (syncTimeout):
		// one running five is stuck.
		dog := watchdog.New(5 * time.Minute)
		base := Base{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("l4lb-controller"), Watchdog: dog}
		lbr := &LoadBalancerReconciler{Base: base,
			Providers:       map[lbv1.Provider]ipam.Provider{lbv1.ProviderStatic: static},
			DefaultProvider: lbv1.Provider(*defaultProvider)}
		if *osSecret != "" {
			ns, name, ok := strings.Cut(*osSecret, "/")
			if !ok {
				return fmt.Errorf("--openstack-secret: want NAMESPACE/NAME, got %q", *osSecret)
			}
			lbr.Providers[lbv1.ProviderOpenStack] = neutron.New(mgr, client.ObjectKey{Namespace: ns, Name: name}, *osCloud, *clusterID)
		}
		if err := Setup(mgr, lbr); err != nil {
			return err
		}
		if err := (&services.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("l4lb-controller"), Watchdog: dog,
			DefaultClass: *serviceDefault, OpenStack: lbr.DefaultProvider == lbv1.ProviderOpenStack}).SetupWithManager(mgr); err != nil {
			return err
		}
		if err := gateway.Setup(mgr, mgr.GetClient(), mgr.GetEventRecorder("l4lb-controller"), dog); err != nil {
			return err
		}
		if err := mgr.AddHealthzCheck("reconcile", dog.Check); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("informers", manager.InformersSynced(mgr)); err != nil {
			return err
		}
		return mgr.Start(ctrl.SetupSignalHandler())
	}
}

// leaderLock is the election's Lease, named leaderElectionID, in namespace (the pod's when
// empty), held under the same identity and request timeout controller-runtime would give it.
func leaderLock(cfg *rest.Config, namespace string) (resourcelock.Interface, error) {
	if namespace == "" {
		b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
		if err != nil {
			return nil, fmt.Errorf("--leader-elect outside a pod needs --leader-election-namespace: %w", err)
		}
		namespace = strings.TrimSpace(string(b))
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, err
	}
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), "leader-election")
	// Half the manager's renew deadline (10 s): a renewal that hangs fails in time to retry.
	cfg.Timeout = 5 * time.Second
	leases, err := coordinationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return podowner.LeaseLock(leases, types.NamespacedName{Namespace: namespace, Name: leaderElectionID}, host+"_"+string(uuid.NewUUID())), nil
}
