package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// ListenerProtocol is the layer-4 protocol a listener accepts.
// +kubebuilder:validation:Enum=TCP;UDP
type ListenerProtocol string

const (
	ListenerTCP ListenerProtocol = "TCP"
	ListenerUDP ListenerProtocol = "UDP"
)

// ListenerSpec is Octavia's listener: a protocol and port on the load balancer's VIP.
type ListenerSpec struct {
	// loadBalancerRef names the LoadBalancer this listener belongs to.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="loadBalancerRef is immutable"
	LoadBalancerRef ObjectReference `json:"loadBalancerRef"`

	// protocol is TCP or UDP.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="protocol is immutable"
	Protocol ListenerProtocol `json:"protocol"`

	// protocolPort is the port on the VIP; unique per load balancer and protocol.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="protocolPort is immutable"
	ProtocolPort int32 `json:"protocolPort"`

	// description is free text.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	Description string `json:"description,omitempty"`

	// adminStateUp false stops this listener; its operatingStatus becomes OFFLINE.
	// +optional
	// +kubebuilder:default=true
	AdminStateUp *bool `json:"adminStateUp,omitempty"`

	// connectionLimit caps concurrent connections; excess ones are refused at once. -1 means
	// the dataplane's default (50000, as Octavia's amphora).
	// +optional
	// +kubebuilder:default=-1
	// +kubebuilder:validation:Minimum=-1
	ConnectionLimit *int32 `json:"connectionLimit,omitempty"`

	// timeoutClientData closes a client connection idle for this long.
	// +optional
	// +kubebuilder:default="50s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('576h')",message="must be between 0s and 576h (24 days)"
	TimeoutClientData *metav1.Duration `json:"timeoutClientData,omitempty"`

	// timeoutMemberConnect bounds connecting to members, retries on other members included.
	// +optional
	// +kubebuilder:default="5s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('576h')",message="must be between 0s and 576h (24 days)"
	TimeoutMemberConnect *metav1.Duration `json:"timeoutMemberConnect,omitempty"`

	// timeoutMemberData closes a member connection idle for this long.
	// +optional
	// +kubebuilder:default="50s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('576h')",message="must be between 0s and 576h (24 days)"
	TimeoutMemberData *metav1.Duration `json:"timeoutMemberData,omitempty"`

	// timeoutTCPInspect is how long to wait for the client's first bytes before choosing a
	// member; 0 chooses at once.
	// +optional
	// +kubebuilder:default="0s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('576h')",message="must be between 0s and 576h (24 days)"
	TimeoutTCPInspect *metav1.Duration `json:"timeoutTCPInspect,omitempty"`

	// allowedCIDRs, IPv4 or IPv6, are the only sources let in; empty allows every source.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=49
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="each allowedCIDRs entry must be a CIDR such as 192.0.2.0/24 or 2001:db8::/32"
	AllowedCIDRs []string `json:"allowedCIDRs,omitempty"`
}

// ListenerStatus is what the operator and the dataplane report.
type ListenerStatus struct {
	CommonStatus `json:",inline"`
	// DataPath is what carries the listener's traffic on the node holding its VIP: Kernel
	// (nftables NAT and conntrack: each connection set up once, end to end) or Proxy (the
	// dataplane's proxy, for settings the kernel cannot honour: docs/architecture.md).
	// +optional
	DataPath DataPath `json:"dataPath,omitempty"`
}

// DataPath is what carries a listener's traffic.
// +kubebuilder:validation:Enum=Kernel;Proxy
type DataPath string

const (
	DataPathKernel DataPath = "Kernel"
	DataPathProxy  DataPath = "Proxy"
)

// Listener accepts TCP or UDP on a port of a LoadBalancer's VIP and hands connections to the
// Pool that names it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=lbl,categories=l4lb
// +kubebuilder:printcolumn:name="LoadBalancer",type=string,JSONPath=`.spec.loadBalancerRef.name`
// +kubebuilder:printcolumn:name="Protocol",type=string,JSONPath=`.spec.protocol`
// +kubebuilder:printcolumn:name="Port",type=integer,JSONPath=`.spec.protocolPort`
// +kubebuilder:printcolumn:name="Provisioning",type=string,JSONPath=`.status.provisioningStatus`
// +kubebuilder:printcolumn:name="Operating",type=string,JSONPath=`.status.operatingStatus`
// +kubebuilder:printcolumn:name="Path",type=string,JSONPath=`.status.dataPath`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Listener struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ListenerSpec `json:"spec"`
	// +optional
	// +kubebuilder:default={"provisioningStatus":"PENDING_CREATE","operatingStatus":"OFFLINE","observedGeneration":0}
	Status ListenerStatus `json:"status,omitempty"`
}

// ListenerList is a list of Listeners.
// +kubebuilder:object:root=true
type ListenerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Listener `json:"items"`
}
