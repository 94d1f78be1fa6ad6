// Package v1alpha1 holds the l4lb API: Octavia's layer-4 load balancer model as Kubernetes
// objects (LoadBalancer, Listener, Pool, HealthMonitor) in the lb.l4lb.io group.
// +kubebuilder:object:generate=true
// +groupName=lb.l4lb.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every l4lb object.
	GroupVersion = schema.GroupVersion{Group: "lb.l4lb.io", Version: "v1alpha1"}

	// SchemeBuilder registers the l4lb types with a runtime.Scheme. It uses apimachinery only,
	// so the API package stays cheap to import.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the l4lb types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&LoadBalancer{}, &LoadBalancerList{},
		&Listener{}, &ListenerList{},
		&Pool{}, &PoolList{},
		&HealthMonitor{}, &HealthMonitorList{},
		&VIPPool{}, &VIPPoolList{},
		&AddressPolicy{}, &AddressPolicyList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
