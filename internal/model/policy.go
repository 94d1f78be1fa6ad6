package model

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Policy is which addresses load balancers may use. Tenants write the objects, and the
// dataplane runs on the nodes' host network: without these rules a member at 127.0.0.1:10250
// or 169.254.169.254:80 would give a tenant a path to the kubelet or the cloud's metadata
// service, and a VIP on a node's own address would take the node's traffic. The zero Policy
// applies the built-in rules; AddressPolicy objects add exceptions and more refusals.
type Policy struct {
	// Allow exempts these ranges from the built-in rules; Deny refuses these as well, and wins.
	Allow, Deny []netip.Prefix
	// VIPReserved are ranges no VIP may be in, with why: the nodes' own addresses, the pod and
	// Service CIDRs. Allow does not exempt them.
	VIPReserved []Reserved
	// Unrestricted turns every rule off. Only the standalone mode uses it: its file is the
	// operator's own, not a tenant's.
	Unrestricted bool
}

// Reserved is a range with the reason it is reserved.
type Reserved struct {
	Prefix netip.Prefix
	Why    string
}

// PolicyFrom adds up AddressPolicy objects. Their CIDRs are validated by the API server; one
// that does not parse is skipped.
func PolicyFrom(policies []lbv1.AddressPolicy) Policy {
	var p Policy
	parse := func(in []string) (out []netip.Prefix) {
		for _, s := range in {
			if pr, err := netip.ParsePrefix(s); err == nil {
				out = append(out, pr.Masked())
			}
		}
		return out
	}
	for _, ap := range policies {
		p.Allow = append(p.Allow, parse(ap.Spec.Allow)...)
		p.Deny = append(p.Deny, parse(ap.Spec.Deny)...)
	}
	return p
}

func within(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// builtIn names the class of an address no member, monitor or VIP may have, or "".
func builtIn(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback (the node itself)"
	case a.IsLinkLocalUnicast():
		return "link-local (where the cloud's metadata service lives)"
	case a.IsMulticast():
		return "multicast"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "broadcast"
	}
	return ""
}

// MemberRefused says why a member's (or monitor's) address may not be used, or "".
func (p Policy) MemberRefused(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case p.Unrestricted:
		return ""
	case within(p.Deny, a):
		return fmt.Sprintf("%s is denied by an AddressPolicy", a)
	case within(p.Allow, a):
		return ""
	}
	if class := builtIn(a); class != "" {
		return fmt.Sprintf("%s is %s; only an AddressPolicy's allow can admit it", a, class)
	}
	return ""
}

// VIPRefused says why an address may not be a VIP, or "".
func (p Policy) VIPRefused(a netip.Addr) string {
	a = a.Unmap()
	if p.Unrestricted {
		return ""
	}
	for _, r := range p.VIPReserved {
		if r.Prefix.Contains(a) {
			return fmt.Sprintf("%s is %s", a, r.Why)
		}
	}
	return p.MemberRefused(a)
}

// PolicyFor is the policy of a cluster: its AddressPolicies, and as VIPReserved the nodes'
// own addresses, their pod CIDRs and the Service CIDRs.
func PolicyFor(policies []lbv1.AddressPolicy, nodes []corev1.Node, serviceCIDRs []networkingv1.ServiceCIDR) Policy {
	p := PolicyFrom(policies)
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				p.VIPReserved = append(p.VIPReserved, Reserved{netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()), "the address of node " + n.Name})
			}
		}
		for _, c := range n.Spec.PodCIDRs {
			if pr, err := netip.ParsePrefix(c); err == nil {
				p.VIPReserved = append(p.VIPReserved, Reserved{pr.Masked(), "in the pod CIDR " + c + " of node " + n.Name})
			}
		}
	}
	for _, sc := range serviceCIDRs {
		for _, c := range sc.Spec.CIDRs {
			if pr, err := netip.ParsePrefix(c); err == nil {
				p.VIPReserved = append(p.VIPReserved, Reserved{pr.Masked(), "in the Service CIDR " + c})
			}
		}
	}
	return p
}
