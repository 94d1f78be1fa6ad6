package v1alpha1

// Condition types. Every kind carries Accepted, Programmed and Ready; a LoadBalancer also
// carries one condition per concern of its VIP.
const (
	// ConditionAccepted: the spec is valid and every reference resolves.
	ConditionAccepted = "Accepted"
	// ConditionProgrammed: the dataplane serves this generation.
	ConditionProgrammed = "Programmed"
	// ConditionReady summarises the others; it is what kubectl wait reads.
	ConditionReady = "Ready"
	// ConditionVIPAllocated: the VIP address (and, on OpenStack, its Neutron port) exists.
	ConditionVIPAllocated = "VIPAllocated"
	// ConditionFloatingIPAttached: the floating IP is associated with the VIP port.
	ConditionFloatingIPAttached = "FloatingIPAttached"
	// ConditionVIPAnnounced: one node holds the VIP and announces it.
	ConditionVIPAnnounced = "VIPAnnounced"
	// ConditionSynced: the last sync with the VIP provider (or the release, while deleting)
	// succeeded. False says which step failed and why; what already exists keeps serving, so
	// it does not make Ready false by itself.
	ConditionSynced = "Synced"
	// ConditionMembersAccepted: every member of a pool may be served; False names the ones
	// an address rule refused (the others serve).
	ConditionMembersAccepted = "MembersAccepted"
	// ConditionReconciling, kstatus's convention (Flux, kpt, cli-utils): true while the
	// provisioning status is PENDING_CREATE or PENDING_UPDATE, absent otherwise. Without it,
	// kstatus takes an object whose status.observedGeneration is its generation as reconciled,
	// pending or not, and a GitOps pipeline would go on before the load balancer serves.
	ConditionReconciling = "Reconciling"
	// ConditionStalled, kstatus's convention: true in ERROR (kstatus: Failed), naming what
	// failed; absent otherwise.
	ConditionStalled = "Stalled"
)

// Condition reasons.
const (
	ReasonAccepted            = "Accepted"
	ReasonInvalid             = "Invalid"
	ReasonReferenceNotFound   = "ReferenceNotFound"
	ReasonProtocolMismatch    = "ProtocolMismatch"
	ReasonPortConflict        = "PortConflict"
	ReasonDuplicate           = "Duplicate"
	ReasonProgrammed          = "Programmed"
	ReasonPending             = "Pending"
	ReasonBindFailed          = "BindFailed"
	ReasonReady               = "Ready"
	ReasonNotReady            = "NotReady"
	ReasonAdminDown           = "AdminDown"
	ReasonDeleting            = "Deleting"
	ReasonAllocated           = "Allocated"
	ReasonAllocationFailed    = "AllocationFailed"
	ReasonAddressInUse        = "AddressInUse"
	ReasonAttached            = "Attached"
	ReasonAttachFailed        = "AttachFailed"
	ReasonNotRequested        = "NotRequested"
	ReasonAnnounced           = "Announced"
	ReasonNoHolder            = "NoHolder"
	ReasonProviderUnavailable = "ProviderUnavailable"
	ReasonCredentialsRefused  = "CredentialsRefused"
	ReasonQuotaExceeded       = "QuotaExceeded"
	ReasonConflict            = "Conflict"
	ReasonNotFound            = "NotFound"
	ReasonSynced              = "Synced"
	ReasonAddressRefused      = "AddressRefused"
	ReasonNotInPool           = "NotInPool"
	ReasonOverlap             = "Overlap"
	ReasonAdoptionRefused     = "AdoptionRefused"
	ReasonReleaseFailed       = "ReleaseFailed"
)

// Finalizer is put on every l4lb object so the operator releases what it made (VIPs,
// floating IPs, dataplane state) before the object goes.
const Finalizer = "lb.l4lb.io/finalizer"
