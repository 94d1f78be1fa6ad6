// Package openstack is the VIP provider for OpenStack: the VIP is an unbound Neutron port, a
// floating IP is associated with it, and the nodes' ports get the VIP as an allowed address
// pair so port security lets it through. It also validates users' Keystone tokens for the
// Octavia API (keystone.go). It is the only package that imports gophercloud.
package openstack

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

// Credentials are what a client is built from.
type Credentials struct {
	Auth     gophercloud.AuthOptions
	Endpoint gophercloud.EndpointOpts
	TLS      *tls.Config
}

// FromSecret reads credentials from a Secret's data, the OpenStack way: a clouds.yaml under
// the key "clouds.yaml" (the cloud named by the key "cloud", or cloud), or the OS_* variables
// of an openrc file as keys. A CA bundle may be given under "cacert".
func FromSecret(data map[string][]byte, cloud string) (Credentials, error) {
	var c Credentials
	if y, ok := data["clouds.yaml"]; ok {
		if name := strings.TrimSpace(string(data["cloud"])); name != "" {
			cloud = name
		}
		auth, ep, tlsCfg, err := clouds.Parse(clouds.WithCloudsYAML(bytes.NewReader(y)), clouds.WithCloudName(cloud))
		if err != nil {
			return c, fmt.Errorf("clouds.yaml: %w", err)
		}
		c = Credentials{Auth: auth, Endpoint: ep, TLS: tlsCfg}
	} else {
		get := func(k string) string { return strings.TrimSpace(string(data[k])) }
		if get("OS_AUTH_URL") == "" {
			return c, fmt.Errorf("the secret has neither clouds.yaml nor OS_AUTH_URL")
		}
		c.Auth = gophercloud.AuthOptions{
			IdentityEndpoint:            get("OS_AUTH_URL"),
			Username:                    get("OS_USERNAME"),
			UserID:                      get("OS_USER_ID"),
			Password:                    get("OS_PASSWORD"),
			TenantName:                  cmp.Or(get("OS_PROJECT_NAME"), get("OS_TENANT_NAME")),
			TenantID:                    cmp.Or(get("OS_PROJECT_ID"), get("OS_TENANT_ID")),
			DomainName:                  cmp.Or(get("OS_USER_DOMAIN_NAME"), get("OS_DOMAIN_NAME")),
			DomainID:                    cmp.Or(get("OS_USER_DOMAIN_ID"), get("OS_DOMAIN_ID")),
			ApplicationCredentialID:     get("OS_APPLICATION_CREDENTIAL_ID"),
			ApplicationCredentialName:   get("OS_APPLICATION_CREDENTIAL_NAME"),
			ApplicationCredentialSecret: get("OS_APPLICATION_CREDENTIAL_SECRET"),
		}
		if pd := cmp.Or(get("OS_PROJECT_DOMAIN_NAME"), get("OS_PROJECT_DOMAIN_ID")); pd != "" && c.Auth.TenantName != "" {
			scope := &gophercloud.AuthScope{ProjectName: c.Auth.TenantName}
			if get("OS_PROJECT_DOMAIN_NAME") != "" {
				scope.DomainName = get("OS_PROJECT_DOMAIN_NAME")
			} else {
				scope.DomainID = get("OS_PROJECT_DOMAIN_ID")
			}
			c.Auth.Scope = scope
		}
		c.Endpoint = gophercloud.EndpointOpts{Region: get("OS_REGION_NAME"), Availability: availability(get("OS_INTERFACE"))}
	}
	if ca := data["cacert"]; len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return c, fmt.Errorf("cacert: no PEM certificate")
		}
		if c.TLS == nil {
			c.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		c.TLS.RootCAs = pool
	}
	// Tokens expire; let gophercloud authenticate again instead of failing.
	c.Auth.AllowReauth = true
	return c, nil
}

func availability(iface string) gophercloud.Availability {
	switch strings.TrimSuffix(iface, "URL") {
	case "internal":
		return gophercloud.AvailabilityInternal
	case "admin":
		return gophercloud.AvailabilityAdmin
	}
	return gophercloud.AvailabilityPublic
}
