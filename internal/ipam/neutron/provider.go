package neutron

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/attributestags"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/floatingips"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	corev1 "k8s.io/api/core/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/openstack"
)

// Provider allocates VIPs in Neutron. Every resource it creates carries the load balancer's
// UID and the cluster's id as tags (and a deterministic name and description, which covers a
// crash between creating and tagging), so a restarted controller finds and adopts what it
// made instead of leaking it, and never touches what it did not make.
type Provider struct {
	// ClusterID tells this cluster's resources from another's in the same project.
	ClusterID string
	// Credentials returns the current credentials (read from the Secret).
	Credentials func(ctx context.Context) (openstack.Credentials, error)
	// Nodes returns the nodes whose Neutron ports must accept the VIPs.
	Nodes func(ctx context.Context) ([]corev1.Node, error)
	// Record tells the user what was done in the cloud (events).
	Record func(lb *lbv1.LoadBalancer, warning bool, reason, msg string)
	// Pools reads the VIP pools a namespace may use, and every pool of the cluster; nil
	// leaves subnets and floating IP networks ungoverned.
	Pools func(ctx context.Context, namespace string) ([]ipam.Pool, []lbv1.VIPPool, error)
	// Project reads the Keystone project a namespace holds (lbv1.ProjectLabel), "" for none:
	// the VIP ports of its load balancers are made in that project, as Octavia makes them in
	// the load balancer's, so that its users can read them and point floating IPs at them.
	// Nil, or none: the project of the credentials.
	Project func(ctx context.Context, namespace string) (string, error)

	mu  sync.Mutex
	net *gophercloud.ServiceClient
}

const deviceOwner = "l4lb:vip"

func (p *Provider) tags(lb *lbv1.LoadBalancer) []string {
	return []string{"l4lb-uid:" + string(lb.UID), "l4lb-cluster:" + p.ClusterID}
}

// permit checks that lb's namespace may use the subnet or external network named by id and
// name (which) once any VIP pool governs them: one of its pools must list the ID or the name.
func (p *Provider) permit(ctx context.Context, lb *lbv1.LoadBalancer, which, field, id, name string) error {
	if p.Pools == nil {
		return nil
	}
	mine, all, err := p.Pools(ctx, lb.Namespace)
	if err != nil {
		return &ipam.Error{Reason: lbv1.ReasonProviderUnavailable, Err: fmt.Errorf("reading the VIP pools: %w", err)}
	}
	subnets, networks := ipam.Governed(all)
	if (which == "subnet" && !subnets) || (which == "network" && !networks) {
		return nil
	}
	for _, pool := range mine {
		allowed := pool.Subnets
		if which == "network" {
			allowed = pool.FloatingIPNetworks
		}
		for _, a := range allowed {
			if a == id || (name != "" && a == name) {
				return nil
			}
		}
	}
	return &ipam.Error{Reason: lbv1.ReasonNotInPool, Err: fmt.Errorf("%s: %s %s is in no VIP pool namespace %s may use", field, which, cmp.Or(name, id), lb.Namespace)}
}

// adoptedTag marks a port or floating IP the user made and a load balancer adopted: another
// load balancer may not adopt it, and release removes the mark, never the resource.
func adoptedTag(lb *lbv1.LoadBalancer) string { return "l4lb-adopted-by:" + string(lb.UID) }

// pairsTag marks the ports (the nodes') to which this cluster added VIPs as allowed address
// pairs: the only ports it ever removes a pair from, so pairs others made stay.
func (p *Provider) pairsTag() string { return "l4lb-pairs:" + p.ClusterID }

// claim lets lb adopt the port or floating IP id of kind (tagged tags; attached says what it
// is attached to, or "") when no load balancer has it and it is free, and marks it adopted.
func (p *Provider) claim(ctx context.Context, nc *gophercloud.ServiceClient, kind, id string, tags []string, attached string, lb *lbv1.LoadBalancer) error {
	mine := adoptedTag(lb)
	for _, t := range tags {
		if t == mine || t == "l4lb-uid:"+string(lb.UID) {
			return nil
		}
		if strings.HasPrefix(t, "l4lb-uid:") || strings.HasPrefix(t, "l4lb-adopted-by:") {
			return &ipam.Error{Reason: lbv1.ReasonAdoptionRefused, Err: fmt.Errorf("%s %s belongs to another load balancer (tag %s)", kind, id, t)}
		}
	}
	if attached != "" {
		return &ipam.Error{Reason: lbv1.ReasonAdoptionRefused, Err: fmt.Errorf("%s %s is %s: only an unattached one can be adopted", kind, id, attached)}
	}
	err := attributestags.Add(ctx, nc, kind, id, mine).ExtractErr()
	return classify("marking "+kind+" "+id+" adopted", err)
}

// unclaim removes lb's adoption mark; not found is success.
func unclaim(ctx context.Context, nc *gophercloud.ServiceClient, kind, id string, lb *lbv1.LoadBalancer) error {
	if err := attributestags.Delete(ctx, nc, kind, id, adoptedTag(lb)).ExtractErr(); err != nil && !isNotFound(err) {
		return classify("unmarking "+kind+" "+id, err)
	}
	return nil
}

func portName(lb *lbv1.LoadBalancer) string {
	return truncate("l4lb-"+lb.Namespace+"-"+lb.Name, 255)
}

func description(lb *lbv1.LoadBalancer) string {
	return "l4lb load balancer " + lb.Namespace + "/" + lb.Name + " uid " + string(lb.UID)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (p *Provider) record(lb *lbv1.LoadBalancer, warning bool, reason, format string, args ...any) {
	if p.Record != nil {
		p.Record(lb, warning, reason, fmt.Sprintf(format, args...))
	}
}

// client authenticates once and keeps the client; gophercloud re-authenticates on expiry. A
// refused authentication is forgotten, so a fixed Secret is picked up on the next try. The
// lock guards only the field: authenticating to a slow Keystone holds up no other load
// balancer's work behind a lock (two may authenticate at once; the last one's client is kept).
func (p *Provider) client(ctx context.Context) (*gophercloud.ServiceClient, error) {
	p.mu.Lock()
	nc := p.net
	p.mu.Unlock()
	if nc != nil {
		return nc, nil
	}
	creds, err := p.Credentials(ctx)
	if err != nil {
		// A Secret missing or unreadable is a setup to fix; one that could not be read
		// because the API server blinked says so in its own reason (ProviderUnavailable).
		return nil, &ipam.Error{Reason: ipam.Reason(err, lbv1.ReasonCredentialsRefused), Err: fmt.Errorf("openstack credentials: %w", err)}
	}
	nc, err = openstack.Network(ctx, creds)
	if err != nil {
		return nil, classify("authenticating to OpenStack and finding Neutron", err)
	}
	p.mu.Lock()
	p.net = nc
	p.mu.Unlock()
	return nc, nil
}

// forget drops the client after a refused authentication.
func (p *Provider) forget(err error) {
	if ipam.Reason(err, "") == lbv1.ReasonCredentialsRefused {
		p.mu.Lock()
		p.net = nil
		p.mu.Unlock()
	}
}

// Allocate makes sure the VIP port, the floating IP and the nodes' address pairs exist. When
// the port exists but a later step fails, the returned Allocation still carries the VIP.
func (p *Provider) Allocate(ctx context.Context, lb *lbv1.LoadBalancer) (ipam.Allocation, error) {
	nc, err := p.client(ctx)
	if err != nil {
		return ipam.Allocation{}, err
	}
	port, err := p.ensurePort(ctx, nc, lb)
	if err != nil {
		p.forget(err)
		return ipam.Allocation{}, err
	}
	alloc := ipam.Allocation{PortID: port.ID, NetworkID: port.NetworkID}
	if len(port.FixedIPs) > 0 {
		alloc.Address, alloc.SubnetID = port.FixedIPs[0].IPAddress, port.FixedIPs[0].SubnetID
	}
	if err := p.ensureAddressPairs(ctx, nc, port.NetworkID, alloc.Address); err != nil {
		return alloc, err
	}
	if lb.Spec.FloatingIP != nil {
		fip, err := p.ensureFloatingIP(ctx, nc, lb, port, alloc.Address)
		if err != nil {
			return alloc, &ipam.Error{Reason: ipam.Reason(err, lbv1.ReasonAttachFailed), Err: err}
		}
		alloc.FloatingIPAddress, alloc.FloatingIPID = fip.FloatingIP, fip.ID
	} else {
		// A floating IP the user associated with the VIP port themselves (Octavia's way:
		// `openstack floating ip set --port`) is reported, never detached nor deleted: it
		// carries no tag of this load balancer, so Release leaves it be.
		found, err := listFloatingIPs(ctx, nc, floatingips.ListOpts{PortID: port.ID})
		if err != nil {
			return alloc, classify("listing the floating IPs of the VIP port", err)
		}
		if len(found) > 0 {
			alloc.FloatingIPAddress = found[0].FloatingIP
		}
	}
	return alloc, nil
}

func listPorts(ctx context.Context, nc *gophercloud.ServiceClient, opts ports.ListOpts) ([]ports.Port, error) {
	pages, err := ports.List(nc, opts).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	return ports.ExtractPorts(pages)
}

func listFloatingIPs(ctx context.Context, nc *gophercloud.ServiceClient, opts floatingips.ListOpts) ([]floatingips.FloatingIP, error) {
	pages, err := floatingips.List(nc, opts).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	return floatingips.ExtractFloatingIPs(pages)
}

// findOurs finds the port this load balancer's VIP lives on: by tags, else (a crash between
// create and tag) by name and description, which are then tagged.
func (p *Provider) findPort(ctx context.Context, nc *gophercloud.ServiceClient, lb *lbv1.LoadBalancer) (*ports.Port, error) {
	found, err := listPorts(ctx, nc, ports.ListOpts{Tags: strings.Join(p.tags(lb), ",")})
	if err != nil {
		return nil, classify("listing VIP ports", err)
	}
	if len(found) == 0 {
		if found, err = listPorts(ctx, nc, ports.ListOpts{Name: portName(lb), Description: description(lb)}); err != nil {
			return nil, classify("listing VIP ports", err)
		}
		if len(found) > 0 {
			if err := p.tag(ctx, nc, "ports", found[0].ID, lb); err != nil {
				return nil, err
			}
		}
	}
	if len(found) == 0 {
		return nil, nil
	}
	return &found[0], nil
}

func (p *Provider) tag(ctx context.Context, nc *gophercloud.ServiceClient, kind, id string, lb *lbv1.LoadBalancer) error {
	_, err := attributestags.ReplaceAll(ctx, nc, kind, id, attributestags.ReplaceAllOpts{Tags: p.tags(lb)}).Extract()
	return classify("tagging "+kind+" "+id, err)
}

func (p *Provider) ensurePort(ctx context.Context, nc *gophercloud.ServiceClient, lb *lbv1.LoadBalancer) (*ports.Port, error) {
	spec := lb.Spec.VIP
	if spec == nil {
		return nil, &ipam.Error{Reason: lbv1.ReasonInvalid, Err: fmt.Errorf("vip.subnet, vip.network or vip.port is required with provider openstack")}
	}
	if spec.Port != "" { // adopted: used as it is, never deleted
		port, err := ports.Get(ctx, nc, spec.Port).Extract()
		if err != nil {
			return nil, classify("getting vip.port "+spec.Port, err)
		}
		for _, ip := range port.FixedIPs {
			name := ""
			if sn, err := subnets.Get(ctx, nc, ip.SubnetID).Extract(); err == nil {
				name = sn.Name
			}
			if err := p.permit(ctx, lb, "subnet", "spec.vip.port", ip.SubnetID, name); err != nil {
				return nil, err
			}
		}
		attached := ""
		if port.DeviceOwner != "" || port.DeviceID != "" {
			attached = "attached to " + strings.TrimSpace(port.DeviceOwner+" "+port.DeviceID)
		}
		if err := p.claim(ctx, nc, "ports", port.ID, port.Tags, attached, lb); err != nil {
			return nil, err
		}
		return port, nil
	}
	if port, err := p.findPort(ctx, nc, lb); port != nil || err != nil {
		return port, err
	}
	netID, subnet, err := resolveVIPSubnet(ctx, nc, spec)
	if err != nil {
		return nil, err
	}
	field := "spec.vip.subnet"
	if spec.Subnet == "" {
		field = "spec.vip.network"
	}
	if err := p.permit(ctx, lb, "subnet", field, subnet.ID, subnet.Name); err != nil {
		return nil, err
	}
	project := ""
	if p.Project != nil {
		if project, err = p.Project(ctx, lb.Namespace); err != nil {
			return nil, &ipam.Error{Reason: lbv1.ReasonProviderUnavailable, Err: fmt.Errorf("reading namespace %s: %w", lb.Namespace, err)}
		}
	}
	fixed := ports.IP{SubnetID: subnet.ID, IPAddress: spec.Address}
	up := true
	port, err := ports.Create(ctx, nc, ports.CreateOpts{
		Name: portName(lb), Description: description(lb), NetworkID: netID, AdminStateUp: &up,
		FixedIPs: []ports.IP{fixed}, DeviceOwner: deviceOwner, ProjectID: project,
	}).Extract()
	if err != nil {
		return nil, classify("creating the VIP port", err)
	}
	if err := p.tag(ctx, nc, "ports", port.ID, lb); err != nil {
		return nil, err
	}
	p.record(lb, false, "CreatedVIPPort", "created Neutron port %s for the VIP %s", port.ID, port.FixedIPs[0].IPAddress)
	return port, nil
}

// resolveVIPSubnet turns vip.subnet or vip.network (names or IDs) into a network and subnet;
// on a network the first IPv4 subnet is chosen, as Octavia does.
func resolveVIPSubnet(ctx context.Context, nc *gophercloud.ServiceClient, spec *lbv1.VIP) (string, *subnets.Subnet, error) {
	if spec.Subnet != "" {
		s, err := findSubnet(ctx, nc, spec.Subnet)
		if err != nil {
			return "", nil, err
		}
		return s.NetworkID, s, nil
	}
	netID, err := findNetwork(ctx, nc, spec.Network)
	if err != nil {
		return "", nil, err
	}
	pages, err := subnets.List(nc, subnets.ListOpts{NetworkID: netID}).AllPages(ctx)
	if err != nil {
		return "", nil, classify("listing subnets", err)
	}
	all, err := subnets.ExtractSubnets(pages)
	if err != nil {
		return "", nil, classify("listing subnets", err)
	}
	slices.SortStableFunc(all, func(a, b subnets.Subnet) int { return a.IPVersion - b.IPVersion })
	if len(all) == 0 {
		return "", nil, &ipam.Error{Reason: lbv1.ReasonNotFound, Err: fmt.Errorf("network %q has no subnet", spec.Network)}
	}
	return netID, &all[0], nil
}

func findSubnet(ctx context.Context, nc *gophercloud.ServiceClient, nameOrID string) (*subnets.Subnet, error) {
	if s, err := subnets.Get(ctx, nc, nameOrID).Extract(); err == nil {
		return s, nil
	}
	pages, err := subnets.List(nc, subnets.ListOpts{Name: nameOrID}).AllPages(ctx)
	if err != nil {
		return nil, classify("finding subnet "+nameOrID, err)
	}
	all, err := subnets.ExtractSubnets(pages)
	if err != nil {
		return nil, classify("finding subnet "+nameOrID, err)
	}
	if len(all) != 1 {
		return nil, &ipam.Error{Reason: lbv1.ReasonNotFound, Err: fmt.Errorf("subnet %q: %d found, want one", nameOrID, len(all))}
	}
	return &all[0], nil
}

func findNetwork(ctx context.Context, nc *gophercloud.ServiceClient, nameOrID string) (string, error) {
	if n, err := networks.Get(ctx, nc, nameOrID).Extract(); err == nil {
		return n.ID, nil
	}
	pages, err := networks.List(nc, networks.ListOpts{Name: nameOrID}).AllPages(ctx)
	if err != nil {
		return "", classify("finding network "+nameOrID, err)
	}
	all, err := networks.ExtractNetworks(pages)
	if err != nil {
		return "", classify("finding network "+nameOrID, err)
	}
	if len(all) != 1 {
		return "", &ipam.Error{Reason: lbv1.ReasonNotFound, Err: fmt.Errorf("network %q: %d found, want one", nameOrID, len(all))}
	}
	return all[0].ID, nil
}

// findFloatingIP finds the floating IP this load balancer made: by tags, else by description.
func (p *Provider) findFloatingIP(ctx context.Context, nc *gophercloud.ServiceClient, lb *lbv1.LoadBalancer) (*floatingips.FloatingIP, error) {
	found, err := listFloatingIPs(ctx, nc, floatingips.ListOpts{Tags: strings.Join(p.tags(lb), ",")})
	if err != nil {
		return nil, classify("listing floating IPs", err)
	}
	if len(found) == 0 {
		if found, err = listFloatingIPs(ctx, nc, floatingips.ListOpts{Description: description(lb)}); err != nil {
			return nil, classify("listing floating IPs", err)
		}
		if len(found) > 0 {
			if err := p.tag(ctx, nc, "floatingips", found[0].ID, lb); err != nil {
				return nil, err
			}
		}
	}
	if len(found) == 0 {
		return nil, nil
	}
	return &found[0], nil
}

func (p *Provider) ensureFloatingIP(ctx context.Context, nc *gophercloud.ServiceClient, lb *lbv1.LoadBalancer, port *ports.Port, vipAddr string) (*floatingips.FloatingIP, error) {
	spec := lb.Spec.FloatingIP
	var fip *floatingips.FloatingIP
	if spec.Address != "" { // adopted: associated, never deleted
		found, err := listFloatingIPs(ctx, nc, floatingips.ListOpts{FloatingIP: spec.Address})
		if err != nil {
			return nil, classify("finding floating IP "+spec.Address, err)
		}
		if len(found) == 0 {
			return nil, &ipam.Error{Reason: lbv1.ReasonNotFound, Err: fmt.Errorf("floating IP %s not found", spec.Address)}
		}
		fip = &found[0]
		name := ""
		if n, err := networks.Get(ctx, nc, fip.FloatingNetworkID).Extract(); err == nil {
			name = n.Name
		}
		if err := p.permit(ctx, lb, "network", "spec.floatingIP.address", fip.FloatingNetworkID, name); err != nil {
			return nil, err
		}
		attached := ""
		if fip.PortID != "" && fip.PortID != port.ID {
			attached = "associated with port " + fip.PortID
		}
		if err := p.claim(ctx, nc, "floatingips", fip.ID, fip.Tags, attached, lb); err != nil {
			return nil, err
		}
	} else {
		var err error
		if fip, err = p.findFloatingIP(ctx, nc, lb); err != nil {
			return nil, err
		}
	}
	if fip == nil {
		netID, err := findNetwork(ctx, nc, spec.Network)
		if err != nil {
			return nil, err
		}
		if err := p.permit(ctx, lb, "network", "spec.floatingIP.network", netID, spec.Network); err != nil {
			return nil, err
		}
		// Created already associated: no window where it exists unattached.
		fip, err = floatingips.Create(ctx, nc, floatingips.CreateOpts{
			FloatingNetworkID: netID, PortID: port.ID, FixedIP: vipAddr, Description: description(lb),
		}).Extract()
		if err != nil {
			return nil, classify("creating the floating IP", err)
		}
		if err := p.tag(ctx, nc, "floatingips", fip.ID, lb); err != nil {
			return nil, err
		}
		p.record(lb, false, "AssociatedFloatingIP", "created floating IP %s on %s for the VIP %s", fip.FloatingIP, spec.Network, vipAddr)
		return fip, nil
	}
	if fip.PortID != port.ID {
		updated, err := floatingips.Update(ctx, nc, fip.ID, floatingips.UpdateOpts{PortID: &port.ID, FixedIP: vipAddr}).Extract()
		if err != nil {
			p.record(lb, true, "FailedAssociateFloatingIP", "associating floating IP %s: %v", fip.FloatingIP, err)
			return nil, classify("associating floating IP "+fip.FloatingIP, err)
		}
		p.record(lb, false, "AssociatedFloatingIP", "associated floating IP %s with the VIP %s", fip.FloatingIP, vipAddr)
		fip = updated
	}
	return fip, nil
}

// Release undoes what Allocate did: the VIP leaves the nodes' address pairs, a floating IP
// the operator created is deleted (or only disassociated with reclaimPolicy Retain, as is an
// adopted one), and the VIP port is deleted unless it was adopted. Not found is success.
func (p *Provider) Release(ctx context.Context, lb *lbv1.LoadBalancer) error {
	nc, err := p.client(ctx)
	if err != nil {
		return err
	}
	if fip, err := p.findFloatingIP(ctx, nc, lb); err != nil {
		return err
	} else if fip != nil {
		retain := lb.Spec.FloatingIP != nil && lb.Spec.FloatingIP.ReclaimPolicy == lbv1.ReclaimRetain
		if retain {
			if err := disassociate(ctx, nc, fip); err != nil {
				return err
			}
			p.record(lb, false, "DisassociatedFloatingIP", "kept floating IP %s (reclaimPolicy Retain), disassociated", fip.FloatingIP)
		} else {
			if err := floatingips.Delete(ctx, nc, fip.ID).ExtractErr(); err != nil && !isNotFound(err) {
				return classify("deleting floating IP "+fip.FloatingIP, err)
			}
			p.record(lb, false, "DeletedFloatingIP", "deleted floating IP %s", fip.FloatingIP)
		}
	}
	if lb.Spec.FloatingIP != nil && lb.Spec.FloatingIP.Address != "" {
		found, err := listFloatingIPs(ctx, nc, floatingips.ListOpts{FloatingIP: lb.Spec.FloatingIP.Address})
		if err != nil {
			return classify("finding floating IP "+lb.Spec.FloatingIP.Address, err)
		}
		for i := range found {
			if !slices.Contains(found[i].Tags, adoptedTag(lb)) {
				continue // another load balancer's, or never adopted: not ours to touch
			}
			if found[i].PortID != "" && found[i].PortID == lb.Status.VIPPortID {
				if err := disassociate(ctx, nc, &found[i]); err != nil {
					return err
				}
			}
			if err := unclaim(ctx, nc, "floatingips", found[i].ID, lb); err != nil {
				return err
			}
		}
	}
	port, err := p.findPort(ctx, nc, lb)
	if err != nil {
		return err
	}
	adopted := lb.Spec.VIP != nil && lb.Spec.VIP.Port != ""
	if port == nil && adopted {
		if port, err = ports.Get(ctx, nc, lb.Spec.VIP.Port).Extract(); isNotFound(err) {
			port, err = nil, nil
		}
		if err != nil {
			return classify("getting vip.port", err)
		}
		if port != nil && !slices.Contains(port.Tags, adoptedTag(lb)) {
			return nil // never adopted (refused): nothing of it is ours
		}
	}
	if port == nil {
		return nil
	}
	for _, ip := range port.FixedIPs {
		if err := p.removeAddressPairs(ctx, nc, port.NetworkID, ip.IPAddress, nil); err != nil {
			return err
		}
	}
	if adopted {
		return unclaim(ctx, nc, "ports", port.ID, lb)
	}
	if err := ports.Delete(ctx, nc, port.ID).ExtractErr(); err != nil && !isNotFound(err) {
		return classify("deleting the VIP port", err)
	}
	p.record(lb, false, "DeletedVIPPort", "deleted Neutron port %s", port.ID)
	return nil
}

func disassociate(ctx context.Context, nc *gophercloud.ServiceClient, fip *floatingips.FloatingIP) error {
	if fip.PortID == "" {
		return nil
	}
	empty := ""
	_, err := floatingips.Update(ctx, nc, fip.ID, floatingips.UpdateOpts{PortID: &empty}).Extract()
	if err != nil && !isNotFound(err) {
		return classify("disassociating floating IP "+fip.FloatingIP, err)
	}
	return nil
}

// serverID reads the Nova server of a node from its providerID (openstack:///<id> or
// openstack://<region>/<id>).
func serverID(n *corev1.Node) string {
	id, ok := strings.CutPrefix(n.Spec.ProviderID, "openstack://")
	if !ok {
		return ""
	}
	return id[strings.LastIndex(id, "/")+1:]
}

// Inputs is what an allocation depends on besides the spec: the servers of the nodes, whose
// ports must accept the VIP. Read from the cache, without calling the cloud.
func (p *Provider) Inputs(ctx context.Context) (string, error) {
	if p.Nodes == nil {
		return "", nil
	}
	nodes, err := p.Nodes(ctx)
	if err != nil {
		return "", err
	}
	var ids []string
	for i := range nodes {
		if id := serverID(&nodes[i]); id != "" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return strings.Join(slices.Compact(ids), ","), nil
}

// ensureAddressPairs adds the VIP to the allowed address pairs of every node's port on the
// VIP network, and removes it from ports of servers that are no longer nodes.
func (p *Provider) ensureAddressPairs(ctx context.Context, nc *gophercloud.ServiceClient, networkID, vipAddr string) error {
	if p.Nodes == nil || vipAddr == "" {
		return nil
	}
	nodes, err := p.Nodes(ctx)
	if err != nil {
		return err
	}
	servers := map[string]bool{}
	for i := range nodes {
		if id := serverID(&nodes[i]); id != "" {
			servers[id] = true
		}
	}
	for id := range servers {
		found, err := listPorts(ctx, nc, ports.ListOpts{DeviceID: id, NetworkID: networkID})
		if err != nil {
			return classify("listing the ports of server "+id, err)
		}
		for _, port := range found {
			if !hasPair(port, vipAddr) {
				pairs := append(slices.Clone(port.AllowedAddressPairs), ports.AddressPair{IPAddress: vipAddr})
				rev := port.RevisionNumber // a concurrent change of the port makes this fail, and retry
				if _, err := ports.Update(ctx, nc, port.ID, ports.UpdateOpts{AllowedAddressPairs: &pairs, RevisionNumber: &rev}).Extract(); err != nil {
					return classify("adding the VIP to the allowed address pairs of port "+port.ID, err)
				}
			}
			// Tagged after the update, which the tag's own revision would otherwise refuse.
			if !slices.Contains(port.Tags, p.pairsTag()) {
				if err := attributestags.Add(ctx, nc, "ports", port.ID, p.pairsTag()).ExtractErr(); err != nil {
					return classify("tagging port "+port.ID, err)
				}
			}
		}
	}
	return p.removeAddressPairs(ctx, nc, networkID, vipAddr, servers)
}

// removeAddressPairs removes the VIP from the ports on the network whose server is not in
// keep, among the ports this cluster added pairs to (pairsTag): a pair someone else made for
// the same address, on another port, stays.
func (p *Provider) removeAddressPairs(ctx context.Context, nc *gophercloud.ServiceClient, networkID, vipAddr string, keep map[string]bool) error {
	found, err := listPorts(ctx, nc, ports.ListOpts{NetworkID: networkID, Tags: p.pairsTag()})
	if err != nil {
		return classify("listing ports", err)
	}
	for _, port := range found {
		if !hasPair(port, vipAddr) || keep[port.DeviceID] {
			continue
		}
		pairs := slices.DeleteFunc(slices.Clone(port.AllowedAddressPairs), func(a ports.AddressPair) bool { return samePair(a, vipAddr) })
		rev := port.RevisionNumber
		if _, err := ports.Update(ctx, nc, port.ID, ports.UpdateOpts{AllowedAddressPairs: &pairs, RevisionNumber: &rev}).Extract(); err != nil && !isNotFound(err) {
			return classify("removing the VIP from the allowed address pairs of port "+port.ID, err)
		}
	}
	return nil
}

func hasPair(port ports.Port, addr string) bool {
	return slices.ContainsFunc(port.AllowedAddressPairs, func(a ports.AddressPair) bool { return samePair(a, addr) })
}

func samePair(a ports.AddressPair, addr string) bool {
	if a.IPAddress == addr {
		return true
	}
	p, err := netip.ParsePrefix(a.IPAddress)
	ip, err2 := netip.ParseAddr(addr)
	return err == nil && err2 == nil && p.Bits() == ip.BitLen() && p.Addr() == ip
}
