package openstack

import (
	"context"
	"net/http"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	osconfig "github.com/gophercloud/gophercloud/v2/openstack/config"
)

// RequestTimeout bounds every call to the cloud, so neither a reconcile nor an API request
// hangs on Keystone or Neutron.
const RequestTimeout = 30 * time.Second

// authenticate signs in with c, every call bounded by RequestTimeout.
func authenticate(ctx context.Context, c Credentials) (*gophercloud.ProviderClient, error) {
	withTimeout := osconfig.WithHTTPClient(http.Client{Timeout: RequestTimeout})
	if c.TLS != nil {
		return osconfig.NewProviderClient(ctx, c.Auth, withTimeout, osconfig.WithTLSConfig(c.TLS))
	}
	return osconfig.NewProviderClient(ctx, c.Auth, withTimeout)
}

// Network signs in with c and returns a client of Neutron's API. Errors are gophercloud's,
// for the caller to classify.
func Network(ctx context.Context, c Credentials) (*gophercloud.ServiceClient, error) {
	pc, err := authenticate(ctx, c)
	if err != nil {
		return nil, err
	}
	return openstack.NewNetworkV2(pc, c.Endpoint)
}

// identity signs in with c and returns a client of Keystone's API.
func identity(ctx context.Context, c Credentials) (*gophercloud.ServiceClient, error) {
	pc, err := authenticate(ctx, c)
	if err != nil {
		return nil, err
	}
	return openstack.NewIdentityV3(pc, c.Endpoint)
}
