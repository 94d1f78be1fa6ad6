package testenv

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers"
	"github.com/l4lb/l4lb/controllers/gateway"
	"github.com/l4lb/l4lb/controllers/services"
	"github.com/l4lb/l4lb/dataplane/agent"
	"github.com/l4lb/l4lb/dataplane/proxy"
	"github.com/l4lb/l4lb/dataplane/vip"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/manager"
)

// ControlPlane is what a test runs beside the API server, in its own process.
type ControlPlane struct {
	// Providers builds the VIP providers from the manager (static only when nil).
	Providers       func(ctrl.Manager) map[lbv1.Provider]ipam.Provider
	DefaultProvider lbv1.Provider // static when empty
	// AgentNode, when set, runs a dataplane agent for that node name in this process;
	// AgentVIPs makes its VIPs local (nil: listeners bind without owning the address).
	AgentNode string
	AgentVIPs *vip.Local
	// ServiceDefaultClass serves LoadBalancer Services of no class too (the controller's
	// --service-default-class).
	ServiceDefaultClass bool
}

// Run starts the controller (and the agent) until ctx ends. It returns the agent's engine,
// which the caller closes.
func (e *Env) Run(ctx context.Context, cp ControlPlane) (*proxy.Server, error) {
	// A test may run a controller again after stopping one (a restart), in the same process.
	skip := true
	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{Scheme: manager.NewScheme(), Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: &skip}})
	if err != nil {
		return nil, err
	}
	providers := map[lbv1.Provider]ipam.Provider{lbv1.ProviderStatic: ipam.NewStatic(nil, mgr.GetClient())}
	if cp.Providers != nil {
		providers = cp.Providers(mgr)
	}
	if cp.DefaultProvider == "" {
		cp.DefaultProvider = lbv1.ProviderStatic
	}
	base := controllers.Base{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("l4lb-controller")}
	lbr := &controllers.LoadBalancerReconciler{Base: base, Providers: providers, DefaultProvider: cp.DefaultProvider}
	if err := controllers.Setup(mgr, lbr); err != nil {
		return nil, err
	}
	if err := (&services.Reconciler{Client: mgr.GetClient(), Recorder: base.Recorder, DefaultClass: cp.ServiceDefaultClass,
		OpenStack: cp.DefaultProvider == lbv1.ProviderOpenStack}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := gateway.Setup(mgr, mgr.GetClient(), base.Recorder, nil); err != nil {
		return nil, err
	}
	var server *proxy.Server
	if cp.AgentNode != "" {
		a := &agent.Agent{Client: mgr.GetClient(), VIPs: cp.AgentVIPs, NodeName: cp.AgentNode}
		a.Server = proxy.New(proxy.Options{OnHealth: a.OnHealth})
		if err := a.SetupWithManager(mgr); err != nil {
			return nil, err
		}
		server = a.Server
	}
	go mgr.Start(ctx)
	return server, nil
}
