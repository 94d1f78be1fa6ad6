package nodes

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l4lb/l4lb/internal/podowner"
)

// Label marks the node Leases.
const Label = "lb.l4lb.io/dataplane-node"

// AddressAnnotation on a node's Lease is where its gossip is reached (host:port).
const AddressAnnotation = "lb.l4lb.io/gossip-address"

// DefaultRenew is how often a node renews its Lease: kubelet's pace, so the dataplane adds no
// more to the API server's write load than the kubelets do. It says which nodes run the
// dataplane, not which are alive; gossip says that.
const DefaultRenew = 10 * time.Second

// expireAfter renewals missed, a node no longer counts in the quorum: kubelet's node Lease
// lasts four renewals too.
const expireAfter = 4

func leaseName(node string) string { return "l4lb-node-" + node }

// Registry keeps this node's Lease (name and gossip address) and reads the others'.
type Registry struct {
	Client    client.Client
	Namespace string
	Node      string
	Address   string // host:port of this node's gossip
	Renew     time.Duration

	lease  *coordinationv1.Lease // as last written; only Run's goroutine touches it
	lastOK atomic.Int64          // unix nanos of this node's last successful renewal

	mu       sync.Mutex
	seen     map[string]seenLease
	lastList time.Time
}

type seenLease struct {
	renew   time.Time // the Lease's renewTime as last read
	changed time.Time // when this node saw it change, on its own clock
	addr    string
}

// Run renews until ctx ends, then deletes the Lease so the others drop this node at once.
func (r *Registry) Run(ctx context.Context) {
	tick := time.NewTicker(r.Renew)
	defer tick.Stop()
	for {
		if r.renew(ctx) == nil {
			r.lastOK.Store(time.Now().UnixNano())
		}
		select {
		case <-ctx.Done():
			del, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r.Client.Delete(del, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: leaseName(r.Node)}})
			cancel()
			return
		case <-tick.C:
		}
	}
}

// renew writes a new renewTime: one Update of the Lease this node last wrote; the Lease is
// read again only after a failure.
func (r *Registry) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.Renew)
	defer cancel()
	now := metav1.NewMicroTime(time.Now())
	if r.lease == nil {
		var l coordinationv1.Lease
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: leaseName(r.Node)}, &l)
		if apierrors.IsNotFound(err) {
			secs := int32(expireAfter * r.Renew / time.Second)
			l = coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: leaseName(r.Node), Labels: map[string]string{Label: "true"},
					Annotations: map[string]string{AddressAnnotation: r.Address}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: &r.Node, LeaseDurationSeconds: &secs, RenewTime: &now, AcquireTime: &now},
			}
			podowner.Set(&l)
			if err := r.Client.Create(ctx, &l); err != nil {
				return err
			}
			r.lease = &l
			return nil
		}
		if err != nil {
			return err
		}
		r.lease = &l
	}
	r.lease.Spec.RenewTime = &now
	if r.lease.Annotations == nil {
		r.lease.Annotations = map[string]string{}
	}
	r.lease.Annotations[AddressAnnotation] = r.Address
	podowner.Set(r.lease) // a new pod of the DaemonSet takes the Lease over
	if err := r.Client.Update(ctx, r.lease); err != nil {
		r.lease = nil
		return err
	}
	return nil
}

// Peers returns the gossip addresses of the other nodes that run the dataplane, and the nodes
// whose Lease has gone or expired (they left the cluster: gossip may forget them). Expiry is
// judged on this node's clock, by when it saw each renewTime change, and only while the API
// server answers: a control plane that was down says nothing about the nodes.
func (r *Registry) Peers(ctx context.Context, reader client.Reader) (peers map[string]string, gone []string, err error) {
	var leases coordinationv1.LeaseList
	if err := reader.List(ctx, &leases, client.InNamespace(r.Namespace), client.HasLabels{Label}); err != nil {
		return nil, nil, err
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]seenLease{}
	}
	// The cache answers from memory when the API server does not: this node's own renewals
	// tell whether it does. While they fail, and after a gap, every Lease gets a fresh start.
	fresh := now.Sub(r.lastList) > 2*r.Renew || now.Sub(time.Unix(0, r.lastOK.Load())) > 2*r.Renew
	r.lastList = now
	present := map[string]bool{}
	peers = map[string]string{}
	for _, l := range leases.Items {
		if l.Spec.HolderIdentity == nil || l.Spec.RenewTime == nil {
			continue
		}
		node := *l.Spec.HolderIdentity
		present[node] = true
		s, known := r.seen[node]
		if !known || fresh || !s.renew.Equal(l.Spec.RenewTime.Time) {
			s.renew, s.changed = l.Spec.RenewTime.Time, now
		}
		s.addr = l.Annotations[AddressAnnotation]
		r.seen[node] = s
		if now.Sub(s.changed) > expireAfter*r.Renew {
			gone = append(gone, node)
			continue
		}
		if node != r.Node && s.addr != "" {
			peers[node] = s.addr
		}
	}
	for node := range r.seen {
		if !present[node] {
			delete(r.seen, node)
			gone = append(gone, node)
		}
	}
	return peers, gone, nil
}

// HostPort joins an address and a port.
func HostPort(addr string, port int) string { return net.JoinHostPort(addr, strconv.Itoa(port)) }
