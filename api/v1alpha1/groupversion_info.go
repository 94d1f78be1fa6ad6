// Package v1alpha1 holds the l4lb API: Octavia's layer-4 load balancer model as Kubernetes
// objects (LoadBalancer, Listener, Pool, HealthMonitor) in the lb.l4lb.io group.
// +kubebuilder:object:generate=true
// +groupName=lb.l4lb.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every l4lb object.
	GroupVersion = schema.GroupVersion{Group: "lb.l4lb.io", Version: "v1alpha1"}

	// SchemeBuilder registers the l4lb types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the l4lb types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
