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

// expireAfter renewals is the Lease's stated duration, as kubelet's node Lease lasts four
// renewals. Nothing here acts on it: a stale Lease keeps its node in the quorum's base
// (docs/architecture.md says why).
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

	mu   sync.Mutex
	seen map[string]bool // the nodes listed last time
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

// Peers returns the gossip addresses of the other nodes that run the dataplane, every node
// with a Lease (listed: the quorum's base), and the nodes whose Lease has gone since the last
// call (gossip may forget them). A Lease that is not renewed keeps its node listed: it may
// be cut off with the API server's side while alive on the other, and the base shrinks only
// by what the API server decides (a Lease deleted with its pod, or by the agent's clean stop).
func (r *Registry) Peers(ctx context.Context, reader client.Reader) (peers map[string]string, listed, gone []string, err error) {
	var leases coordinationv1.LeaseList
	if err := reader.List(ctx, &leases, client.InNamespace(r.Namespace), client.HasLabels{Label}); err != nil {
		return nil, nil, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	present := map[string]bool{}
	peers = map[string]string{}
	for _, l := range leases.Items {
		if l.Spec.HolderIdentity == nil {
			continue
		}
		node := *l.Spec.HolderIdentity
		present[node] = true
		listed = append(listed, node)
		if addr := l.Annotations[AddressAnnotation]; node != r.Node && addr != "" {
			peers[node] = addr
		}
	}
	for node := range r.seen {
		if !present[node] {
			gone = append(gone, node)
		}
	}
	r.seen = present
	return peers, listed, gone, nil
}

// HostPort joins an address and a port.
func HostPort(addr string, port int) string { return net.JoinHostPort(addr, strconv.Itoa(port)) }
