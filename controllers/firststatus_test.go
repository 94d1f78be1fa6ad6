package controllers

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// A new child's first status waits for the dataplane, but only while it would say no more
// than the API server's default; refusals, written statuses and deletions go at once.
func TestAFirstStatusWaitsOnlyWhileItSaysNothingNew(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "l", UID: "u1", Generation: 1}}
	accepted := metav1.Condition{Type: lbv1.ConditionAccepted, Status: metav1.ConditionTrue}
	notReady := metav1.Condition{Type: lbv1.ConditionReady, Status: metav1.ConditionFalse}
	reconciling := metav1.Condition{Type: lbv1.ConditionReconciling, Status: metav1.ConditionTrue}
	waiting := metav1.Condition{Type: lbv1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: lbv1.ReasonPending}
	pending := lbv1.CommonStatus{ProvisioningStatus: lbv1.ProvisioningPendingCreate, ObservedGeneration: 1,
		Conditions: []metav1.Condition{accepted, waiting, notReady, reconciling}}
	fresh := lbv1.CommonStatus{ProvisioningStatus: lbv1.ProvisioningPendingCreate, OperatingStatus: lbv1.OperatingOffline}

	f := newFirstStatus()
	if got := f.hold(l, &fresh, &pending, t0); got != firstStatusWait {
		t.Errorf("first sight: wait %v, want %v", got, firstStatusWait)
	}
	if got := f.hold(l, &fresh, &pending, t0.Add(6*time.Second)); got != firstStatusWait-6*time.Second {
		t.Errorf("6 s later: wait %v, want what is left of the first wait", got)
	}
	if got := f.hold(l, &fresh, &pending, t0.Add(firstStatusWait)); got != 0 {
		t.Errorf("after the wait: wait %v, want the pending status written", got)
	}

	cases := []struct {
		name      string
		cur, next lbv1.CommonStatus
	}{
		{"refused", fresh, lbv1.CommonStatus{ProvisioningStatus: lbv1.ProvisioningError,
			Conditions: []metav1.Condition{{Type: lbv1.ConditionAccepted, Status: metav1.ConditionFalse}}}},
		{"a member refused", fresh, lbv1.CommonStatus{ProvisioningStatus: lbv1.ProvisioningPendingCreate,
			Conditions: []metav1.Condition{accepted, notReady, {Type: lbv1.ConditionMembersAccepted, Status: metav1.ConditionFalse}}}},
		{"served already", fresh, lbv1.CommonStatus{ProvisioningStatus: lbv1.ProvisioningActive, Conditions: []metav1.Condition{accepted}}},
		{"written before", pending, pending},
		{"deleting", fresh, lbv1.CommonStatus{ProvisioningStatus: lbv1.ProvisioningPendingDelete}},
	}
	for _, tc := range cases {
		o := l.DeepCopy()
		o.UID = types.UID(tc.name)
		if got := newFirstStatus().hold(o, &tc.cur, &tc.next, t0); got != 0 {
			t.Errorf("%s: wait %v, want it written at once", tc.name, got)
		}
	}

	// Entries of objects deleted while held are forgotten.
	f = newFirstStatus()
	f.hold(l, &fresh, &pending, t0)
	other := l.DeepCopy()
	other.UID = "u2"
	f.hold(other, &fresh, &pending, t0.Add(3*firstStatusWait))
	if _, ok := f.seen["u1"]; ok || len(f.seen) != 1 {
		t.Errorf("held: %v, want only u2", f.seen)
	}
}

// The status the API server gives a new object (each CRD's status default) is one kstatus
// reads as in progress, so a GitOps pipeline waits for a child whose first status waits too.
func TestTheDefaultStatusIsInProgress(t *testing.T) {
	for _, kind := range []string{"loadbalancers", "listeners", "pools", "healthmonitors"} {
		raw, err := os.ReadFile(filepath.Join("..", "config", "crd", "bases", "lb.l4lb.io_"+kind+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var crd struct {
			Spec struct {
				Versions []struct {
					Schema struct {
						OpenAPIV3Schema struct {
							Properties map[string]struct {
								Default map[string]any `json:"default"`
							} `json:"properties"`
						} `json:"openAPIV3Schema"`
					} `json:"schema"`
				} `json:"versions"`
			} `json:"spec"`
		}
		// As the API server decodes: whole numbers are int64, which kstatus insists on.
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := utiljson.Unmarshal(js, &crd); err != nil {
			t.Fatal(err)
		}
		def := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["status"].Default
		if def["provisioningStatus"] != string(lbv1.ProvisioningPendingCreate) || def["operatingStatus"] != string(lbv1.OperatingOffline) {
			t.Errorf("%s: the status default is %v, want PENDING_CREATE and OFFLINE", kind, def)
		}
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": lbv1.GroupVersion.String(), "kind": "X",
			"metadata": map[string]any{"name": "x", "namespace": "ns", "generation": int64(1)}, "status": def}}
		res, err := kstatus.Compute(u)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != kstatus.InProgressStatus {
			t.Errorf("%s: kstatus reads the default status as %s (%s), want InProgress", kind, res.Status, res.Message)
		}
	}
}
