package services

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// The annotations a Service may carry. Where cloud-provider-openstack names a setting, l4lb
// uses its name and meaning, so a Service written for OpenStack's own provider moves to l4lb
// unchanged; docs/services.md has the table.
const (
	// AnnotationAddresses asks for the VIP (MetalLB's loadBalancerIPs; spec.loadBalancerIP is
	// deprecated). It is taken from the namespace's VIP pools under the same rules as a
	// LoadBalancer's spec.vip.address.
	AnnotationAddresses = "lb.l4lb.io/load-balancer-ips"
	// AnnotationSharedAddress lets Services of one namespace with the same value share the
	// address they all ask for (MetalLB's allow-shared-ip), when their ports do not clash.
	AnnotationSharedAddress = lbv1.SharedAddressAnnotation

	occm                        = "loadbalancer.openstack.org/"
	AnnotationLBMethod          = occm + "lb-method"
	AnnotationConnectionLimit   = occm + "connection-limit"
	AnnotationProxyProtocol     = occm + "proxy-protocol"
	AnnotationTimeoutClientData = occm + "timeout-client-data"
	AnnotationTimeoutMemberConn = occm + "timeout-member-connect"
	AnnotationTimeoutMemberData = occm + "timeout-member-data"
	AnnotationTimeoutTCPInspect = occm + "timeout-tcp-inspect"
	AnnotationHealthMonitor     = occm + "enable-health-monitor"
	AnnotationMonitorDelay      = occm + "health-monitor-delay"
	AnnotationMonitorTimeout    = occm + "health-monitor-timeout"
	AnnotationMonitorRetries    = occm + "health-monitor-max-retries"
	AnnotationMonitorDown       = occm + "health-monitor-max-retries-down"
	AnnotationSubnetID          = occm + "subnet-id"
	AnnotationNetworkID         = occm + "network-id"
	AnnotationPortID            = occm + "port-id"
	AnnotationFloatingNetworkID = occm + "floating-network-id"
	AnnotationKeepFloatingIP    = occm + "keep-floatingip"
	AnnotationInternal          = "service.beta.kubernetes.io/openstack-internal-load-balancer"
)

// settings are a Service's annotations, parsed.
type settings struct {
	addresses                               []string
	share                                   string
	method                                  lbv1.LBAlgorithm
	connectionLimit                         *int32
	proxyProtocol                           lbv1.PoolProtocol
	timeoutClientData, timeoutMemberConnect *metav1.Duration
	timeoutMemberData, timeoutTCPInspect    *metav1.Duration
	monitor                                 *lbv1.HealthMonitorSpec
	subnet, network, port                   string
	floatingNetwork                         string
	keepFloatingIP, internal                bool
}

// annotationError names the annotation whose value l4lb cannot use.
func annotationError(key, value, want string) error {
	return fmt.Errorf("annotation %s: %q is not %s", key, value, want)
}

func parseAnnotations(an map[string]string) (settings, error) {
	s := settings{method: lbv1.RoundRobin, subnet: an[AnnotationSubnetID], network: an[AnnotationNetworkID],
		port: an[AnnotationPortID], floatingNetwork: an[AnnotationFloatingNetworkID]}
	var err error
	boolean := func(key string, def bool) bool {
		v, ok := an[key]
		if !ok || err != nil {
			return def
		}
		b, perr := strconv.ParseBool(v)
		if perr != nil {
			err = annotationError(key, v, "true or false")
		}
		return b
	}
	integer := func(key string, min, max, def int) int {
		v, ok := an[key]
		if !ok || err != nil {
			return def
		}
		n, perr := strconv.Atoi(strings.TrimSpace(v))
		if perr != nil || n < min || n > max {
			err = annotationError(key, v, fmt.Sprintf("an integer from %d to %d", min, max))
		}
		return n
	}
	millis := func(key string) *metav1.Duration {
		if _, ok := an[key]; !ok {
			return nil
		}
		// Octavia's range for its listener timeouts, in milliseconds as cloud-provider-openstack
		// writes them.
		return &metav1.Duration{Duration: time.Duration(integer(key, 0, 31536000000, 0)) * time.Millisecond}
	}

	if v := an[AnnotationAddresses]; v != "" {
		for _, a := range strings.Split(v, ",") {
			a = strings.TrimSpace(a)
			if _, perr := netip.ParseAddr(a); perr != nil {
				return s, annotationError(AnnotationAddresses, v, "a comma-separated list of IP addresses")
			}
			s.addresses = append(s.addresses, a)
		}
		if len(s.addresses) > 1 {
			return s, annotationError(AnnotationAddresses, v, "one address (a load balancer has one VIP)")
		}
	}
	if s.share = an[AnnotationSharedAddress]; s.share != "" && len(s.addresses) == 0 {
		return s, fmt.Errorf("annotation %s: sharing an address takes that address, in %s", AnnotationSharedAddress, AnnotationAddresses)
	}
	if v, ok := an[AnnotationLBMethod]; ok {
		switch m := lbv1.LBAlgorithm(strings.ToUpper(v)); m {
		case lbv1.RoundRobin, lbv1.LeastConnections, lbv1.SourceIP, lbv1.SourceIPPort:
			s.method = m
		default:
			return s, annotationError(AnnotationLBMethod, v, "ROUND_ROBIN, LEAST_CONNECTIONS, SOURCE_IP or SOURCE_IP_PORT")
		}
	}
	if _, ok := an[AnnotationConnectionLimit]; ok {
		s.connectionLimit = ptr.To(int32(integer(AnnotationConnectionLimit, -1, 1<<31-1, -1)))
	}
	if v, ok := an[AnnotationProxyProtocol]; ok {
		switch strings.ToLower(v) {
		case "true", "v1":
			s.proxyProtocol = lbv1.PoolPROXY
		case "v2":
			s.proxyProtocol = lbv1.PoolPROXYV2
		case "false", "":
		default:
			return s, annotationError(AnnotationProxyProtocol, v, "true, v1, v2 or false")
		}
	}
	s.timeoutClientData, s.timeoutMemberConnect = millis(AnnotationTimeoutClientData), millis(AnnotationTimeoutMemberConn)
	s.timeoutMemberData, s.timeoutTCPInspect = millis(AnnotationTimeoutMemberData), millis(AnnotationTimeoutTCPInspect)
	if boolean(AnnotationHealthMonitor, false) {
		// cloud-provider-openstack's defaults: delay 5 s, timeout 3 s, 1 retry up, 3 down.
		s.monitor = &lbv1.HealthMonitorSpec{
			Delay:          metav1.Duration{Duration: time.Duration(integer(AnnotationMonitorDelay, 1, 2073600, 5)) * time.Second},
			Timeout:        metav1.Duration{Duration: time.Duration(integer(AnnotationMonitorTimeout, 1, 2073600, 3)) * time.Second},
			MaxRetries:     int32(integer(AnnotationMonitorRetries, 1, 10, 1)),
			MaxRetriesDown: int32(integer(AnnotationMonitorDown, 1, 10, 3)),
		}
	}
	s.keepFloatingIP = boolean(AnnotationKeepFloatingIP, false)
	s.internal = boolean(AnnotationInternal, false)
	return s, err
}
