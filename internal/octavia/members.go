package octavia

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/google/uuid"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Members: entries of their pool's spec.members, named there. What Octavia says of a member
// beyond that (its tags; its ID once renamed, since an ID derives from the name a member was
// made with) is kept in the pool's MembersAnnotation.

var memberUpdatable = []string{"name", "weight", "backup", "admin_state_up", "monitor_address", "monitor_port", "tags"}

// MembersAnnotation keeps a pool's members' Octavia tags and renamed members' IDs: a JSON
// object by member name.
const MembersAnnotation = "lb.l4lb.io/octavia-members"

type memberMeta struct {
	ID   string   `json:"id,omitempty"`
	Tags []string `json:"tags,omitempty"`
}

func membersMeta(p *lbv1.Pool) map[string]memberMeta {
	out := map[string]memberMeta{}
	if s := p.GetAnnotations()[MembersAnnotation]; s != "" {
		json.Unmarshal([]byte(s), &out)
	}
	return out
}

// setMembersMeta writes meta on the pool, without entries that say nothing or whose member
// is gone.
func setMembersMeta(p *lbv1.Pool, meta map[string]memberMeta) {
	for name, m := range meta {
		if (m.ID == "" && len(m.Tags) == 0) || !slices.ContainsFunc(p.Spec.Members, func(x lbv1.Member) bool { return x.Name == name }) {
			delete(meta, name)
		}
	}
	if len(meta) == 0 {
		annotate(p, MembersAnnotation, "")
		return
	}
	b, _ := json.Marshal(meta)
	annotate(p, MembersAnnotation, string(b))
}

// memberIDOf is a member's Octavia ID: the one it kept through a rename, or its name's.
func memberIDOf(p *lbv1.Pool, meta map[string]memberMeta, name string) string {
	if id := meta[name].ID; id != "" {
		return id
	}
	return memberID(p, name)
}

// setMemberTags records the tags of a member's request object (if it has them) for the
// member named; the request was checked already (memberFrom, applyMember's input).
func setMemberTags(obj map[string]any, meta map[string]memberMeta, name string) {
	if in := newInput(obj, memberUpdatable...); in.present("tags") {
		m := meta[name]
		m.Tags = tagSet(in.strings("tags"))
		meta[name] = m
	}
}

// rename moves what is kept of a member under its new name, keeping its ID.
func rename(p *lbv1.Pool, meta map[string]memberMeta, from, to string) {
	if from == to {
		return
	}
	m := meta[from]
	m.ID = memberIDOf(p, meta, from)
	delete(meta, from)
	meta[to] = m
}

func memberFrom(obj map[string]any, p *lbv1.Pool) (lbv1.Member, error) {
	in := newInput(obj, append(memberUpdatable, "address", "protocol_port", "subnet_id", "project_id", "tenant_id")...)
	m := lbv1.Member{Address: in.str("address")}
	if m.Address == "" {
		in.fail("Invalid input: address is required")
	}
	port, ok := in.num("protocol_port")
	if !ok || port < 1 || port > 65535 {
		in.fail("Invalid input: protocol_port must be 1 to 65535")
	}
	m.ProtocolPort = port
	m.SubnetID = in.str("subnet_id")
	applyMember(in, &m)
	if m.Name == "" {
		m.Name = unnamedMember(m.Address, port)
	}
	for _, other := range p.Spec.Members {
		if other.Address == m.Address && other.ProtocolPort == m.ProtocolPort {
			return m, conflict("Duplicate member: another member of the pool has address %s and protocol_port %d", m.Address, port)
		}
		if other.Name == m.Name {
			return m, conflict("Duplicate member: another member of the pool is named %s", m.Name)
		}
	}
	return m, in.err
}

// unnamedMember is the name a member made without one gets in the pool (names identify
// members there); the API shows it without a name, as it was made.
func unnamedMember(address string, port int32) string {
	return fmt.Sprintf("member-%s-%d", address, port)
}

func applyMember(in *input, m *lbv1.Member) {
	if in.has("name") {
		m.Name = in.str("name")
	}
	if n, ok := in.num("weight"); ok {
		m.Weight = &n
	}
	if b, ok := in.boolean("backup"); ok {
		m.Backup = b
	}
	in.boolPtr("admin_state_up", &m.AdminStateUp)
	if in.has("monitor_address") {
		m.MonitorAddress = in.str("monitor_address")
	}
	if n, ok := in.num("monitor_port"); ok {
		m.MonitorPort = &n
	}
}

func (s *Server) createMember(w http.ResponseWriter, r *http.Request, c *caller) error {
	return s.writeMember(w, r, c, http.StatusCreated, lbv1.ProvisioningPendingCreate, func(p *lbv1.Pool, obj map[string]any) (int, error) {
		m, err := memberFrom(obj, p)
		if err != nil {
			return 0, err
		}
		p.Spec.Members = append(p.Spec.Members, m)
		meta := membersMeta(p)
		setMemberTags(obj, meta, m.Name)
		setMembersMeta(p, meta)
		return len(p.Spec.Members) - 1, nil
	})
}

func (s *Server) updateMember(w http.ResponseWriter, r *http.Request, c *caller) error {
	id := r.PathValue("id")
	return s.writeMember(w, r, c, http.StatusOK, lbv1.ProvisioningPendingUpdate, func(p *lbv1.Pool, obj map[string]any) (int, error) {
		i := memberIndex(p, id)
		if i < 0 {
			return 0, notFound("Member", id)
		}
		in := newInput(obj, memberUpdatable...)
		m := &p.Spec.Members[i]
		old := m.Name
		applyMember(in, m)
		if in.present("name") && in.str("name") == "" {
			m.Name = unnamedMember(m.Address, m.ProtocolPort)
		}
		if in.err != nil {
			return i, in.err
		}
		for j, other := range p.Spec.Members {
			if j != i && other.Name == m.Name {
				return i, conflict("Duplicate member: another member of the pool is named %s", m.Name)
			}
		}
		meta := membersMeta(p)
		rename(p, meta, old, m.Name)
		setMemberTags(obj, meta, m.Name)
		setMembersMeta(p, meta)
		return i, nil
	})
}

// writeMember changes a member of the path's pool (change returns its index) and answers
// with it, in the status given.
func (s *Server) writeMember(w http.ResponseWriter, r *http.Request, c *caller, code int, status lbv1.ProvisioningStatus,
	change func(p *lbv1.Pool, obj map[string]any) (int, error)) error {
	obj, err := body(r, "member")
	if err != nil {
		return err
	}
	v, p, err := s.poolFor(r, c)
	if err != nil {
		return err
	}
	if _, err := writableProject(c, map[string]any{"project_id": v.projects[p.Namespace]}); err != nil {
		return err
	}
	var m lbv1.Member
	err = s.changePool(r.Context(), p, func(p *lbv1.Pool) error {
		i, err := change(p, obj)
		if err == nil {
			m = p.Spec.Members[i]
		}
		return err
	})
	if err != nil {
		return err
	}
	out := memberJSON(v, p, m)
	out["provisioning_status"] = string(status)
	writeJSON(w, code, map[string]any{"member": out})
	return nil
}

// batchMembers is Octavia's batch member update (PUT /pools/{pool}/members), what
// cloud-provider-openstack and Terraform's openstack_lb_members_v2 call: the pool's members
// become the list, matched on address and protocol_port (a match keeps its identity and takes
// the new settings); members not in the list go, unless ?additive_only=true. One update of the
// pool, so all or nothing.
func (s *Server) batchMembers(w http.ResponseWriter, r *http.Request, c *caller) error {
	var b struct {
		Members []map[string]any `json:"members"`
	}
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		return badRequest("Invalid input: the body is not a list of members: %v", err)
	}
	if b.Members == nil {
		return badRequest("Invalid input: the body has no \"members\"")
	}
	additive := truthy(r.URL.Query().Get("additive_only"))
	v, p, err := s.poolFor(r, c)
	if err != nil {
		return err
	}
	if _, err := writableProject(c, map[string]any{"project_id": v.projects[p.Namespace]}); err != nil {
		return err
	}
	err = s.changePool(r.Context(), p, func(p *lbv1.Pool) error {
		type key struct {
			addr string
			port int32
		}
		var next []lbv1.Member
		listed := map[key]bool{}
		meta := membersMeta(p)
		for _, obj := range b.Members {
			m, err := memberFrom(obj, &lbv1.Pool{})
			if err != nil {
				return err
			}
			k := key{m.Address, m.ProtocolPort}
			if listed[k] {
				return conflict("Duplicate member: address %s and protocol_port %d are listed twice", m.Address, m.ProtocolPort)
			}
			listed[k] = true
			if i := slices.IndexFunc(p.Spec.Members, func(o lbv1.Member) bool { return o.Address == m.Address && o.ProtocolPort == m.ProtocolPort }); i >= 0 {
				old := p.Spec.Members[i]
				in := newInput(obj, append(memberUpdatable, "address", "protocol_port", "subnet_id", "project_id", "tenant_id")...)
				applyMember(in, &old)
				if in.present("subnet_id") {
					old.SubnetID = in.str("subnet_id")
				}
				if in.present("name") && in.str("name") == "" {
					old.Name = unnamedMember(old.Address, old.ProtocolPort)
				}
				rename(p, meta, p.Spec.Members[i].Name, old.Name)
				m = old
			}
			setMemberTags(obj, meta, m.Name)
			next = append(next, m)
		}
		if additive {
			for _, o := range p.Spec.Members {
				if !listed[key{o.Address, o.ProtocolPort}] {
					next = append(next, o)
				}
			}
		}
		names := map[string]bool{}
		for _, m := range next {
			if names[m.Name] {
				return conflict("Duplicate member: two members would be named %s", m.Name)
			}
			names[m.Name] = true
		}
		p.Spec.Members = next
		setMembersMeta(p, meta)
		return nil
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (s *Server) deleteMember(w http.ResponseWriter, r *http.Request, c *caller) error {
	_, p, err := s.poolFor(r, c)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	err = s.changePool(r.Context(), p, func(p *lbv1.Pool) error {
		i := memberIndex(p, id)
		if i < 0 {
			return notFound("Member", id)
		}
		p.Spec.Members = slices.Delete(p.Spec.Members, i, i+1)
		return nil
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// The members of a pool, addressed by their own IDs under the pool's.

func (s *Server) poolFor(r *http.Request, c *caller) (*view, *lbv1.Pool, error) {
	v, o, err := s.found(r, c, pools, "pool")
	if err != nil {
		return nil, nil, err
	}
	return v, o.(*lbv1.Pool), nil
}

func memberIndex(p *lbv1.Pool, id string) int {
	meta := membersMeta(p)
	for i, m := range p.Spec.Members {
		if memberIDOf(p, meta, m.Name) == id {
			return i
		}
	}
	return -1
}

func (s *Server) listMembers(w http.ResponseWriter, r *http.Request, c *caller) error {
	v, p, err := s.poolFor(r, c)
	if err != nil {
		return err
	}
	var items []map[string]any
	for _, m := range p.Spec.Members {
		items = append(items, memberJSON(v, p, m))
	}
	out, err := page(r, "members", items)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getMember(w http.ResponseWriter, r *http.Request, c *caller) error {
	v, p, err := s.poolFor(r, c)
	if err != nil {
		return err
	}
	i := memberIndex(p, r.PathValue("id"))
	if i < 0 {
		return notFound("Member", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, map[string]any{"member": memberJSON(v, p, p.Spec.Members[i])})
	return nil
}

// memberID is a member's stable ID: its pool's UID and its name, hashed (UUIDv5).
func memberID(p *lbv1.Pool, name string) string {
	ns, err := uuid.Parse(string(p.UID))
	if err != nil {
		ns = uuid.NameSpaceOID
	}
	return uuid.NewSHA1(ns, []byte(name)).String()
}
