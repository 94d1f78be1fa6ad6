package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// ProvisioningStatus is Octavia's provisioning_status: where the operator is in making the
// object real.
// +kubebuilder:validation:Enum=ACTIVE;PENDING_CREATE;PENDING_UPDATE;PENDING_DELETE;ERROR;DELETED
type ProvisioningStatus string

const (
	ProvisioningActive        ProvisioningStatus = "ACTIVE"
	ProvisioningPendingCreate ProvisioningStatus = "PENDING_CREATE"
	ProvisioningPendingUpdate ProvisioningStatus = "PENDING_UPDATE"
	ProvisioningPendingDelete ProvisioningStatus = "PENDING_DELETE"
	ProvisioningError         ProvisioningStatus = "ERROR"
	ProvisioningDeleted       ProvisioningStatus = "DELETED"
)

// OperatingStatus is Octavia's operating_status: how the object serves traffic.
// +kubebuilder:validation:Enum=ONLINE;OFFLINE;DEGRADED;ERROR;DRAINING;NO_MONITOR
type OperatingStatus string

const (
	OperatingOnline    OperatingStatus = "ONLINE"
	OperatingOffline   OperatingStatus = "OFFLINE"
	OperatingDegraded  OperatingStatus = "DEGRADED"
	OperatingError     OperatingStatus = "ERROR"
	OperatingDraining  OperatingStatus = "DRAINING"
	OperatingNoMonitor OperatingStatus = "NO_MONITOR"
)

// FailoverAnnotation on a LoadBalancer names a node its VIP moves off (Octavia's failover,
// or `kubectl annotate`): that node ranks last for this VIP, so the next node takes it over
// with a normal hand-over (the holder lets go first). It stays until the next failover.
const FailoverAnnotation = "lb.l4lb.io/failover-from"

// SharedAddressAnnotation on a LoadBalancer lets its VIP be another load balancer's when both
// are in one namespace, carry the same value and ask for that address in spec.vip.address
// (MetalLB's allow-shared-ip; the static provider). Their listeners share the address's ports:
// one port and protocol serves one listener, the older, and the other is refused with
// PortConflict.
const SharedAddressAnnotation = "lb.l4lb.io/allow-shared-ip"

// ProjectLabel marks the namespace that holds a Keystone project's load balancers: its value
// is the project's ID. One namespace per project; an administrator labels it, or the Octavia
// API creates openstack-<project ID> on the project's first write. The OpenStack provider
// makes the VIP ports of the namespace's load balancers in that project, as Octavia makes
// them in the load balancer's, so that the project's users see and use them (security
// groups, floating IPs).
const ProjectLabel = "lb.l4lb.io/openstack-project"

// ObjectReference names another l4lb object in the same namespace.
type ObjectReference struct {
	// name of the referenced object, in this object's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// CommonStatus is the part of the status every l4lb kind shares: Octavia's two statuses and
// the Kubernetes conditions that kubectl wait and kstatus (Flux's health checks) read.
type CommonStatus struct {
	// provisioningStatus is Octavia's provisioning_status.
	// +optional
	ProvisioningStatus ProvisioningStatus `json:"provisioningStatus,omitempty"`

	// operatingStatus is Octavia's operating_status, cascaded member -> pool -> listener ->
	// load balancer.
	// +optional
	OperatingStatus OperatingStatus `json:"operatingStatus,omitempty"`

	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Accepted, Programmed and Ready, plus per-concern ones.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}
