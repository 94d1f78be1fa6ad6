package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MonitorType is how members are checked.
// +kubebuilder:validation:Enum=TCP;HTTP;HTTPS;TLS-HELLO;UDP-CONNECT;PING
type MonitorType string

const (
	MonitorTCP        MonitorType = "TCP"
	MonitorHTTP       MonitorType = "HTTP"
	MonitorHTTPS      MonitorType = "HTTPS"
	MonitorTLSHello   MonitorType = "TLS-HELLO"
	MonitorUDPConnect MonitorType = "UDP-CONNECT"
	MonitorPing       MonitorType = "PING"
)

// HTTPMethod is the method of an HTTP or HTTPS check.
// +kubebuilder:validation:Enum=CONNECT;DELETE;GET;HEAD;OPTIONS;PATCH;POST;PUT;TRACE
type HTTPMethod string

// HTTPVersion is the HTTP version of a check.
// +kubebuilder:validation:Enum="1.0";"1.1"
type HTTPVersion string

// The HTTP fields carry Octavia's defaults on every monitor (the API server cannot default by
// type), so on other types only those defaults are accepted.
//
// HealthMonitorSpec is Octavia's health monitor: one per pool.
// +kubebuilder:validation:XValidation:rule="self.type != 'UDP-CONNECT' || duration(self.delay) >= duration('3s')",message="delay must be at least 3s for UDP-CONNECT",fieldPath=".delay"
// +kubebuilder:validation:XValidation:rule="self.type in ['HTTP', 'HTTPS'] || self.httpMethod == 'GET'",message="httpMethod applies only to HTTP and HTTPS monitors",fieldPath=".httpMethod"
// +kubebuilder:validation:XValidation:rule="self.type in ['HTTP', 'HTTPS'] || self.urlPath == '/'",message="urlPath applies only to HTTP and HTTPS monitors",fieldPath=".urlPath"
// +kubebuilder:validation:XValidation:rule="self.type in ['HTTP', 'HTTPS'] || self.expectedCodes == '200'",message="expectedCodes applies only to HTTP and HTTPS monitors",fieldPath=".expectedCodes"
// +kubebuilder:validation:XValidation:rule="self.type in ['HTTP', 'HTTPS'] || !has(self.httpVersion) || self.httpVersion == '1.0'",message="httpVersion applies only to HTTP and HTTPS monitors",fieldPath=".httpVersion"
// +kubebuilder:validation:XValidation:rule="self.type in ['HTTP', 'HTTPS'] || !has(self.domainName)",message="domainName applies only to HTTP and HTTPS monitors",fieldPath=".domainName"
// +kubebuilder:validation:XValidation:rule="!has(self.domainName) || (has(self.httpVersion) && self.httpVersion == '1.1')",message="domainName needs httpVersion 1.1",fieldPath=".domainName"
type HealthMonitorSpec struct {
	// poolRef names the Pool whose members this monitor checks.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="poolRef is immutable"
	PoolRef ObjectReference `json:"poolRef"`

	// type is TCP, HTTP, HTTPS, TLS-HELLO, UDP-CONNECT or PING.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="type is immutable"
	Type MonitorType `json:"type"`

	// delay is the interval between checks of a member.
	// +required
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('576h')",message="delay must be between 1s and 576h"
	Delay metav1.Duration `json:"delay"`

	// timeout bounds one check. Octavia accepts one longer than delay (its API tests send
	// delay 2s, timeout 3s): the next check then waits for the one under way.
	// +required
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="timeout must be positive"
	Timeout metav1.Duration `json:"timeout"`

	// maxRetries is the rise: consecutive successes before a member is ONLINE.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	MaxRetries int32 `json:"maxRetries"`

	// maxRetriesDown is the fall: consecutive failures before a member is ERROR.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	MaxRetriesDown int32 `json:"maxRetriesDown,omitempty"`

	// httpMethod of HTTP and HTTPS checks.
	// +optional
	// +kubebuilder:default=GET
	HTTPMethod HTTPMethod `json:"httpMethod,omitempty"`

	// urlPath of HTTP and HTTPS checks; starts with /.
	// +optional
	// +kubebuilder:default="/"
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^/[^\s]*$`
	URLPath string `json:"urlPath,omitempty"`

	// expectedCodes a healthy member answers: a code (200), a list (200,202) or a range
	// (200-204).
	// +optional
	// +kubebuilder:default="200"
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[1-5][0-9]{2}(-[1-5][0-9]{2})?(,[1-5][0-9]{2}(-[1-5][0-9]{2})?)*$`
	ExpectedCodes string `json:"expectedCodes,omitempty"`

	// httpVersion of HTTP and HTTPS checks: 1.0 or 1.1; unset is 1.0 (and reads back unset
	// through the Octavia API, as Octavia's null does: Terraform plans a change otherwise).
	// +optional
	HTTPVersion HTTPVersion `json:"httpVersion,omitempty"`

	// domainName is sent as the Host header; needs httpVersion 1.1.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$`
	DomainName string `json:"domainName,omitempty"`

	// adminStateUp false stops the checks; members then show NO_MONITOR.
	// +optional
	// +kubebuilder:default=true
	AdminStateUp *bool `json:"adminStateUp,omitempty"`
}

// HealthMonitorStatus is what the operator reports.
type HealthMonitorStatus struct {
	CommonStatus `json:",inline"`
}

// HealthMonitor checks the members of one Pool; members failing it get no new connections.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=hm,categories=l4lb
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.poolRef.name`
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Delay",type=string,JSONPath=`.spec.delay`
// +kubebuilder:printcolumn:name="Provisioning",type=string,JSONPath=`.status.provisioningStatus`
// +kubebuilder:printcolumn:name="Operating",type=string,JSONPath=`.status.operatingStatus`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type HealthMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec HealthMonitorSpec `json:"spec"`
	// +optional
	// +kubebuilder:default={"provisioningStatus":"PENDING_CREATE","operatingStatus":"OFFLINE","observedGeneration":0}
	Status HealthMonitorStatus `json:"status,omitempty"`
}

// HealthMonitorList is a list of HealthMonitors.
// +kubebuilder:object:root=true
type HealthMonitorList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HealthMonitor `json:"items"`
}
