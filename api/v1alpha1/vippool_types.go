package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// VIPPoolSpec is a set of addresses the static provider hands out, or Neutron subnets and
// external networks the openstack provider takes VIPs and floating IPs from, and who may
// have them.
// +kubebuilder:validation:XValidation:rule="has(self.addresses) || has(self.subnets) || has(self.floatingIPNetworks)",message="a pool needs addresses, subnets or floatingIPNetworks"
type VIPPoolSpec struct {
	// addresses are the CIDRs of the pool. The static provider allocates from them (the
	// network address of an IPv4 CIDR under /31 is skipped), and an explicit
	// spec.vip.address must fall in a pool its namespace may use.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=49
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="each address must be a CIDR such as 198.51.100.0/24"
	Addresses []string `json:"addresses,omitempty"`

	// subnets are Neutron subnets, by name or ID, whose VIPs (ports made or adopted on them)
	// the namespaces may have with provider openstack. Once any pool names subnets, a load
	// balancer may use only the subnets of its namespace's pools.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=255
	Subnets []string `json:"subnets,omitempty"`

	// floatingIPNetworks are external Neutron networks, by name or ID, the namespaces may take
	// floating IPs from (created or adopted). Once any pool names one, a load balancer may use
	// only those of its namespace's pools.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=255
	FloatingIPNetworks []string `json:"floatingIPNetworks,omitempty"`

	// namespaces that may use the pool, by name. With neither namespaces nor
	// namespaceSelector, every namespace may.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=63
	Namespaces []string `json:"namespaces,omitempty"`

	// namespaceSelector admits the namespaces whose labels match, in addition to namespaces.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="each matchExpressions operator must be In or NotIn (with values) or Exists or DoesNotExist (without)"
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// autoAssign false keeps the pool for load balancers that ask for an address of it in
	// spec.vip.address; true (the default) also serves those that ask for none.
	// +optional
	// +kubebuilder:default=true
	AutoAssign *bool `json:"autoAssign,omitempty"`
}

// VIPPoolStatus reports whether the pool is usable.
type VIPPoolStatus struct {
	// conditions: Accepted (false with reason Overlap when its addresses overlap an older
	// pool's: the newer pool is not used).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// VIPPool is a cluster-wide set of VIP addresses and the namespaces that may use them, as
// MetalLB's IPAddressPool. Only administrators write pools; tenants get addresses from them.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=vipp,categories=l4lb-admin
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Auto",type=boolean,JSONPath=`.spec.autoAssign`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VIPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec VIPPoolSpec `json:"spec"`
	// +optional
	Status VIPPoolStatus `json:"status,omitempty"`
}

// VIPPoolList is a list of VIPPools.
// +kubebuilder:object:root=true
type VIPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VIPPool `json:"items"`
}

// AddressPolicySpec changes which addresses load balancers may use, beyond the built-in
// rules: members and monitor addresses may not be loopback, link-local (the cloud's metadata
// service among them), multicast or unspecified; VIPs may not be those either, nor a node's
// own address, nor in the cluster's pod and Service ranges.
type AddressPolicySpec struct {
	// allow exempts these CIDRs from the built-in rules (127.0.0.0/8 for a lab whose back
	// ends run on the node itself, say). deny wins over allow.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=49
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="each entry must be a CIDR such as 127.0.0.0/8"
	Allow []string `json:"allow,omitempty"`

	// deny refuses these CIDRs too, for members, monitor addresses and VIPs (a management
	// network, say).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=49
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="each entry must be a CIDR such as 10.0.0.0/8"
	Deny []string `json:"deny,omitempty"`
}

// AddressPolicy is an administrator's exceptions to the address rules, for the whole
// cluster. Several policies add up.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=addrpol,categories=l4lb-admin
// +kubebuilder:printcolumn:name="Allow",type=string,JSONPath=`.spec.allow`
// +kubebuilder:printcolumn:name="Deny",type=string,JSONPath=`.spec.deny`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AddressPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AddressPolicySpec `json:"spec"`
}

// AddressPolicyList is a list of AddressPolicies.
// +kubebuilder:object:root=true
type AddressPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AddressPolicy `json:"items"`
}
