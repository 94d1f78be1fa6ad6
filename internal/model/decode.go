package model

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

var codecs = func() serializer.CodecFactory {
	s := runtime.NewScheme()
	if err := lbv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict)
}()

// Decode reads the standalone configuration: a YAML stream of l4lb objects, exactly as they
// would be applied to Kubernetes. Without a controller to allocate it, each load balancer's
// VIP is its spec.vip.address; objects without a namespace are in "default". No address rule
// applies: the file is the operator's own, as haproxy.cfg is, not a tenant's.
func Decode(data []byte) (Objects, error) {
	objs := Objects{Policy: Policy{Unrestricted: true}}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return objs, fmt.Errorf("document %d: %w", i+1, err)
		}
		if js, err := utilyaml.ToJSON(doc); err == nil && (string(js) == "null" || string(js) == "{}") {
			continue // empty, or only comments
		}
		obj, _, err := codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return objs, fmt.Errorf("document %d: %w", i+1, err)
		}
		switch o := obj.(type) {
		case *lbv1.LoadBalancer:
			if o.Spec.VIP == nil || o.Spec.VIP.Address == "" {
				return objs, fmt.Errorf("document %d: LoadBalancer %q needs spec.vip.address in standalone mode", i+1, o.Name)
			}
			o.Status.VIPAddress = o.Spec.VIP.Address
			defaultNamespace(&o.Namespace)
			objs.LoadBalancers = append(objs.LoadBalancers, *o)
		case *lbv1.Listener:
			defaultNamespace(&o.Namespace)
			objs.Listeners = append(objs.Listeners, *o)
		case *lbv1.Pool:
			defaultNamespace(&o.Namespace)
			objs.Pools = append(objs.Pools, *o)
		case *lbv1.HealthMonitor:
			defaultNamespace(&o.Namespace)
			objs.Monitors = append(objs.Monitors, *o)
		default:
			return objs, fmt.Errorf("document %d: %T is not an l4lb object", i+1, obj)
		}
	}
	return objs, nil
}

func defaultNamespace(ns *string) {
	if *ns == "" {
		*ns = "default"
	}
}
