package openstack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

// Identity is who a Keystone token speaks for.
type Identity struct {
	UserID    string
	ProjectID string // empty for a token not scoped to a project
	Roles     []string
	Expires   time.Time
}

// ErrInvalidToken is a token Keystone does not know, or no longer accepts.
var ErrInvalidToken = errors.New("the token is not valid")

// Keystone validates users' tokens with the service's own credentials, as keystonemiddleware
// does for Octavia: a token is checked once and trusted for CacheFor (or until it expires).
type Keystone struct {
	Credentials func(ctx context.Context) (Credentials, error)
	CacheFor    time.Duration

	mu       sync.Mutex
	identity *gophercloud.ServiceClient
	cache    map[string]cached
}

type cached struct {
	id    Identity
	until time.Time
}

// DefaultTokenCache is how long a validated token is trusted (keystonemiddleware's
// token_cache_time is 300 s; shorter revokes sooner).
const DefaultTokenCache = 30 * time.Second

// Validate returns the identity of token. ErrInvalidToken means Keystone refused it; any other
// error means Keystone could not be asked.
func (k *Keystone) Validate(ctx context.Context, token string) (Identity, error) {
	now := time.Now()
	k.mu.Lock()
	if c, ok := k.cache[token]; ok && now.Before(c.until) {
		k.mu.Unlock()
		return c.id, nil
	}
	k.mu.Unlock()
	sc, err := k.client(ctx)
	if err != nil {
		return Identity{}, err
	}
	r := tokens.Get(ctx, sc, token)
	if r.Err != nil {
		if gophercloud.ResponseCodeIs(r.Err, http.StatusNotFound) || gophercloud.ResponseCodeIs(r.Err, http.StatusUnauthorized) {
			return Identity{}, ErrInvalidToken
		}
		if gophercloud.ResponseCodeIs(r.Err, http.StatusForbidden) {
			return Identity{}, fmt.Errorf("the service's credentials may not validate tokens: %w", r.Err)
		}
		k.forget()
		return Identity{}, fmt.Errorf("keystone: %w", r.Err)
	}
	tok, err := r.ExtractToken()
	if err != nil {
		return Identity{}, err
	}
	id := Identity{Expires: tok.ExpiresAt}
	if u, err := r.ExtractUser(); err == nil && u != nil {
		id.UserID = u.ID
	}
	if p, err := r.ExtractProject(); err == nil && p != nil {
		id.ProjectID = p.ID
	}
	roles, err := r.ExtractRoles()
	if err != nil {
		return Identity{}, err
	}
	for _, role := range roles {
		id.Roles = append(id.Roles, role.Name)
	}
	until := now.Add(k.CacheFor)
	if !id.Expires.IsZero() && id.Expires.Before(until) {
		until = id.Expires
	}
	k.mu.Lock()
	if k.cache == nil || len(k.cache) > 10000 { // bounded: a flood of tokens starts it over
		k.cache = map[string]cached{}
	}
	k.cache[token] = cached{id: id, until: until}
	k.mu.Unlock()
	return id, nil
}

func (k *Keystone) client(ctx context.Context) (*gophercloud.ServiceClient, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.identity != nil {
		return k.identity, nil
	}
	c, err := k.Credentials(ctx)
	if err != nil {
		return nil, err
	}
	sc, err := identity(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("authenticating the service with keystone: %w", err)
	}
	k.identity = sc
	return sc, nil
}

// forget drops the service's client after a failure, so the next call authenticates again.
func (k *Keystone) forget() {
	k.mu.Lock()
	k.identity = nil
	k.mu.Unlock()
}
