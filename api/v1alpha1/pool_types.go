package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// PoolProtocol is how the dataplane talks to members. PROXY and PROXYV2 are TCP with a PROXY
// protocol v1 or v2 header first, so members learn the client's address.
// +kubebuilder:validation:Enum=TCP;UDP;PROXY;PROXYV2
type PoolProtocol string

const (
	PoolTCP     PoolProtocol = "TCP"
	PoolUDP     PoolProtocol = "UDP"
	PoolPROXY   PoolProtocol = "PROXY"
	PoolPROXYV2 PoolProtocol = "PROXYV2"
)

// LBAlgorithm chooses the member for a new connection.
// +kubebuilder:validation:Enum=ROUND_ROBIN;LEAST_CONNECTIONS;SOURCE_IP;SOURCE_IP_PORT
type LBAlgorithm string

const (
	RoundRobin       LBAlgorithm = "ROUND_ROBIN"
	LeastConnections LBAlgorithm = "LEAST_CONNECTIONS"
	SourceIP         LBAlgorithm = "SOURCE_IP"
	SourceIPPort     LBAlgorithm = "SOURCE_IP_PORT"
)

// PersistenceType is the kind of session persistence; only SOURCE_IP is layer 4.
// +kubebuilder:validation:Enum=SOURCE_IP
type PersistenceType string

const PersistenceSourceIP PersistenceType = "SOURCE_IP"

// PoolSpec is Octavia's pool: members and how to choose among them. As in Octavia, a pool
// belongs to a load balancer and may be the default pool of one of its listeners: the link
// lives on the pool (listenerRef), so a pool serves at most one listener by construction.
// +kubebuilder:validation:XValidation:rule="!has(self.members) || self.members.all(a, self.members.exists_one(b, b.address == a.address && b.protocolPort == a.protocolPort))",message="members must have unique address and protocolPort",fieldPath=".members"
// +kubebuilder:validation:XValidation:rule="has(self.loadBalancerRef) || has(self.listenerRef)",message="a pool names its loadBalancerRef, its listenerRef, or both"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.loadBalancerRef) || has(self.loadBalancerRef)",message="loadBalancerRef cannot be removed",fieldPath=".loadBalancerRef"
type PoolSpec struct {
	// loadBalancerRef names the LoadBalancer this pool belongs to. Optional when listenerRef
	// is set (the pool then belongs to its listener's load balancer); a pool with no
	// listenerRef waits on its load balancer, unserved, until a listener takes it.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="loadBalancerRef is immutable"
	LoadBalancerRef *ObjectReference `json:"loadBalancerRef,omitempty"`

	// listenerRef names the Listener this pool is the default pool of (Octavia's listener
	// default_pool_id). It may change, or go, to move the pool between listeners of its load
	// balancer; one listener has one default pool.
	// +optional
	ListenerRef *ObjectReference `json:"listenerRef,omitempty"`

	// protocol towards members: TCP, UDP, PROXY or PROXYV2. A TCP listener takes TCP, PROXY
	// and PROXYV2 pools; a UDP listener takes UDP pools.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="protocol is immutable"
	Protocol PoolProtocol `json:"protocol"`

	// lbAlgorithm chooses members: ROUND_ROBIN, LEAST_CONNECTIONS, SOURCE_IP or SOURCE_IP_PORT.
	// +required
	LBAlgorithm LBAlgorithm `json:"lbAlgorithm"`

	// description is free text.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	Description string `json:"description,omitempty"`

	// sessionPersistence keeps a client on one member.
	// +optional
	SessionPersistence *SessionPersistence `json:"sessionPersistence,omitempty"`

	// adminStateUp false takes the pool out of service; its operatingStatus becomes OFFLINE.
	// +optional
	// +kubebuilder:default=true
	AdminStateUp *bool `json:"adminStateUp,omitempty"`

	// members are the back-end servers, matched by name.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	Members []Member `json:"members,omitempty"`
}

// SessionPersistence keeps a client on the same member.
type SessionPersistence struct {
	// type is SOURCE_IP: clients from the same (masked) address go to the same member.
	// +required
	Type PersistenceType `json:"type"`

	// persistenceTimeout forgets a client idle for this long.
	// +optional
	// +kubebuilder:default="360s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="persistenceTimeout must be positive"
	PersistenceTimeout *metav1.Duration `json:"persistenceTimeout,omitempty"`

	// persistenceGranularity is the netmask applied to the client address.
	// +optional
	// +kubebuilder:default="255.255.255.255"
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="persistenceGranularity must be a netmask such as 255.255.255.0"
	PersistenceGranularity string `json:"persistenceGranularity,omitempty"`
}

// Member is one back-end server of a pool.
// +kubebuilder:validation:XValidation:rule="self.address == oldSelf.address",message="member address is immutable",fieldPath=".address"
// +kubebuilder:validation:XValidation:rule="self.protocolPort == oldSelf.protocolPort",message="member protocolPort is immutable",fieldPath=".protocolPort"
type Member struct {
	// name identifies the member in the pool.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// address is the member's IPv4 or IPv6 address.
	// +required
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="address must be an IPv4 or IPv6 address"
	Address string `json:"address"`

	// protocolPort is the member's port.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ProtocolPort int32 `json:"protocolPort"`

	// weight shares traffic among members; 0 drains the member: no new connections, existing
	// ones continue.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=256
	Weight *int32 `json:"weight,omitempty"`

	// backup members get traffic only when every other member is down.
	// +optional
	Backup bool `json:"backup,omitempty"`

	// adminStateUp false sends no traffic to the member; it shows OFFLINE.
	// +optional
	// +kubebuilder:default=true
	AdminStateUp *bool `json:"adminStateUp,omitempty"`

	// subnetID is the subnet the member is on, as Octavia's API records it (subnet_id); l4lb
	// reaches members by their address alone.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	SubnetID string `json:"subnetID,omitempty"`

	// nodeName is the Kubernetes node the member runs on (a Service's endpoint). A load
	// balancer with trafficPolicy Local is held only by nodes running members, and each sends
	// only to its own.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	NodeName string `json:"nodeName,omitempty"`

	// monitorAddress is checked instead of address.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="monitorAddress must be an IPv4 or IPv6 address"
	MonitorAddress string `json:"monitorAddress,omitempty"`

	// monitorPort is checked instead of protocolPort.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	MonitorPort *int32 `json:"monitorPort,omitempty"`
}

// MemberStatus is one member's health as the dataplane sees it.
type MemberStatus struct {
	Name            string          `json:"name"`
	Address         string          `json:"address,omitempty"`
	ProtocolPort    int32           `json:"protocolPort,omitempty"`
	OperatingStatus OperatingStatus `json:"operatingStatus,omitempty"`
}

// PoolStatus is what the operator and the dataplane report.
type PoolStatus struct {
	CommonStatus `json:",inline"`

	// members reports each member's operatingStatus.
	// +optional
	// +listType=map
	// +listMapKey=name
	Members []MemberStatus `json:"members,omitempty"`

	// memberCount is the number of members in the spec.
	// +optional
	MemberCount int32 `json:"memberCount,omitempty"`
}

// Pool is a set of members on a LoadBalancer and the algorithm that balances over them; the
// default pool of at most one of its Listeners.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=lbp,categories=l4lb
// +kubebuilder:printcolumn:name="LoadBalancer",type=string,JSONPath=`.spec.loadBalancerRef.name`
// +kubebuilder:printcolumn:name="Listener",type=string,JSONPath=`.spec.listenerRef.name`
// +kubebuilder:printcolumn:name="Algorithm",type=string,JSONPath=`.spec.lbAlgorithm`
// +kubebuilder:printcolumn:name="Members",type=integer,JSONPath=`.status.memberCount`
// +kubebuilder:printcolumn:name="Provisioning",type=string,JSONPath=`.status.provisioningStatus`
// +kubebuilder:printcolumn:name="Operating",type=string,JSONPath=`.status.operatingStatus`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Pool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec PoolSpec `json:"spec"`
	// +optional
	// +kubebuilder:default={"provisioningStatus":"PENDING_CREATE","operatingStatus":"OFFLINE","observedGeneration":0}
	Status PoolStatus `json:"status,omitempty"`
}

// ListenerName is the listener the pool is the default pool of, "" for none.
func (s *PoolSpec) ListenerName() string {
	if s.ListenerRef == nil {
		return ""
	}
	return s.ListenerRef.Name
}

// PoolList is a list of Pools.
// +kubebuilder:object:root=true
type PoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Pool `json:"items"`
}
