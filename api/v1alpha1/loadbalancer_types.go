package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Provider names the VIP provider that allocates a load balancer's address.
// +kubebuilder:validation:Enum=openstack;static
type Provider string

const (
	// ProviderOpenStack allocates the VIP as a Neutron port and attaches floating IPs.
	ProviderOpenStack Provider = "openstack"
	// ProviderStatic uses spec.vip.address, or an address from the controller's ranges.
	ProviderStatic Provider = "static"
)

// TrafficPolicy says which members the VIP's holder sends to.
// +kubebuilder:validation:Enum=Cluster;Local
type TrafficPolicy string

const (
	TrafficCluster TrafficPolicy = "Cluster"
	TrafficLocal   TrafficPolicy = "Local"
)

// ReclaimPolicy says what happens to a floating IP when its load balancer goes.
// +kubebuilder:validation:Enum=Delete;Retain
type ReclaimPolicy string

const (
	ReclaimDelete ReclaimPolicy = "Delete"
	ReclaimRetain ReclaimPolicy = "Retain"
)

// LoadBalancerSpec is Octavia's load balancer: a VIP and, optionally, a floating IP on it.
// +kubebuilder:validation:XValidation:rule="!has(self.provider) || self.provider != 'openstack' || (has(self.vip) && (has(self.vip.subnet) || has(self.vip.network) || has(self.vip.port)))",message="vip.subnet, vip.network or vip.port is required with provider openstack",fieldPath=".vip"
// +kubebuilder:validation:XValidation:rule="!has(self.provider) || self.provider != 'static' || !has(self.floatingIP)",message="floatingIP needs provider openstack",fieldPath=".floatingIP"
type LoadBalancerSpec struct {
	// description is free text, like Octavia's.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	Description string `json:"description,omitempty"`

	// adminStateUp false stops every listener of this load balancer; its operatingStatus
	// becomes OFFLINE.
	// +optional
	// +kubebuilder:default=true
	AdminStateUp *bool `json:"adminStateUp,omitempty"`

	// provider allocates the VIP: openstack (a Neutron port) or static (an address given or
	// taken from the controller's ranges). Empty means the controller's default.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="provider is immutable"
	Provider Provider `json:"provider,omitempty"`

	// vip says where the virtual IP lives. It cannot change after creation.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="vip is immutable"
	VIP *VIP `json:"vip,omitempty"`

	// floatingIP attaches a floating IP to the VIP port. Absent: no floating IP.
	// +optional
	FloatingIP *FloatingIP `json:"floatingIP,omitempty"`

	// trafficPolicy Local holds the VIP only on a node that runs a member (members name their
	// node in nodeName), and that node sends only to its own members: no second hop, as
	// Kubernetes' externalTrafficPolicy Local. Cluster (or unset): any node holds it and sends
	// to every member.
	// +optional
	TrafficPolicy TrafficPolicy `json:"trafficPolicy,omitempty"`
}

// VIP is where a load balancer's virtual IP is allocated.
// +kubebuilder:validation:XValidation:rule="[has(self.subnet), has(self.network), has(self.port)].filter(x, x).size() <= 1",message="set only one of subnet, network and port"
type VIP struct {
	// subnet is the Neutron subnet, by name or ID, the VIP port is created on.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	Subnet string `json:"subnet,omitempty"`

	// network is the Neutron network, by name or ID; the subnet is chosen IPv4 first.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	Network string `json:"network,omitempty"`

	// port is an existing Neutron port, by ID, to adopt as the VIP port.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	Port string `json:"port,omitempty"`

	// address asks for this IP address (IPv4 or IPv6). With provider static it is the VIP.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="address must be an IPv4 or IPv6 address"
	Address string `json:"address,omitempty"`
}

// FloatingIP is a floating IP associated with the VIP port.
// +kubebuilder:validation:XValidation:rule="has(self.network) || has(self.address)",message="floatingIP needs network or address"
type FloatingIP struct {
	// network is the external Neutron network, by name or ID, to create the floating IP on.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	Network string `json:"network,omitempty"`

	// address adopts an existing floating IP instead of creating one.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="address must be an IPv4 or IPv6 address"
	Address string `json:"address,omitempty"`

	// reclaimPolicy Delete releases a floating IP the operator created when the load balancer
	// goes; Retain only disassociates it. Adopted floating IPs are never deleted.
	// +optional
	// +kubebuilder:default=Delete
	ReclaimPolicy ReclaimPolicy `json:"reclaimPolicy,omitempty"`
}

// LoadBalancerStatus is what the operator and the dataplane report.
type LoadBalancerStatus struct {
	CommonStatus `json:",inline"`

	// vipAddress is the allocated virtual IP.
	// +optional
	VIPAddress string `json:"vipAddress,omitempty"`

	// vipPortID is the Neutron port holding the VIP (provider openstack).
	// +optional
	VIPPortID string `json:"vipPortID,omitempty"`

	// vipNetworkID and vipSubnetID are the Neutron network and subnet of that port (spec.vip
	// may name them by name, or name only one).
	// +optional
	VIPNetworkID string `json:"vipNetworkID,omitempty"`
	// +optional
	VIPSubnetID string `json:"vipSubnetID,omitempty"`

	// floatingIPAddress is the floating IP associated with the VIP.
	// +optional
	FloatingIPAddress string `json:"floatingIPAddress,omitempty"`

	// floatingIPID is the Neutron ID of that floating IP.
	// +optional
	FloatingIPID string `json:"floatingIPID,omitempty"`

	// holder is the node that answers for the VIP.
	// +optional
	Holder string `json:"holder,omitempty"`

	// listeners is the number of listeners attached to this load balancer.
	// +optional
	Listeners int32 `json:"listeners,omitempty"`

	// served is what the node holding the VIP serves of this load balancer's listeners, pools
	// and health monitors, as an amphora's heartbeat reports them: its agent writes the whole
	// tree here in one write, and the controller turns it into each object's Programmed
	// condition, data path and member statuses.
	// +optional
	Served *ServedTree `json:"served,omitempty"`
}

// ServedTree is the dataplane's report of a load balancer's children.
type ServedTree struct {
	// +optional
	// +listType=map
	// +listMapKey=name
	Listeners []Served `json:"listeners,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=name
	Pools []Served `json:"pools,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=name
	HealthMonitors []Served `json:"healthMonitors,omitempty"`
}

// Served is how the dataplane serves one object.
type Served struct {
	// name of the object, in the load balancer's namespace.
	Name string `json:"name"`
	// uid of the object served: an object deleted and made again under the same name is
	// another one, not served until reported again.
	UID types.UID `json:"uid"`
	// generation of the object served.
	Generation int64 `json:"generation"`
	// reason is Programmed when served, else why not (Pending, BindFailed).
	Reason string `json:"reason"`
	// +optional
	Message string `json:"message,omitempty"`
	// dataPath carries a listener's traffic.
	// +optional
	DataPath DataPath `json:"dataPath,omitempty"`
	// members is each of a pool's members' health as the dataplane sees it.
	// +optional
	// +listType=map
	// +listMapKey=name
	Members []MemberStatus `json:"members,omitempty"`
}

// LoadBalancer is an Octavia-style layer-4 load balancer: a virtual IP, served by the l4lb
// dataplane, optionally reachable through an OpenStack floating IP.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=lb,categories=l4lb
// +kubebuilder:printcolumn:name="VIP",type=string,JSONPath=`.status.vipAddress`
// +kubebuilder:printcolumn:name="Floating-IP",type=string,JSONPath=`.status.floatingIPAddress`
// +kubebuilder:printcolumn:name="Provisioning",type=string,JSONPath=`.status.provisioningStatus`
// +kubebuilder:printcolumn:name="Operating",type=string,JSONPath=`.status.operatingStatus`
// +kubebuilder:printcolumn:name="Holder",type=string,JSONPath=`.status.holder`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LoadBalancer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec LoadBalancerSpec `json:"spec,omitempty"`
	// +optional
	// +kubebuilder:default={"provisioningStatus":"PENDING_CREATE","operatingStatus":"OFFLINE","observedGeneration":0}
	Status LoadBalancerStatus `json:"status,omitempty"`
}

// LoadBalancerList is a list of LoadBalancers.
// +kubebuilder:object:root=true
type LoadBalancerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LoadBalancer `json:"items"`
}
