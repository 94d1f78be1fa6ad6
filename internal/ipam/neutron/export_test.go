package neutron

import "github.com/gophercloud/gophercloud/v2"

// The tests that run the whole controller (package neutron_test: test/testenv imports the
// controllers, which import this package) use these helpers of the package's own tests.
var (
	NeedCloud       = needCloud
	HasPair         = hasPair
	IsNotFound      = isNotFound
	Node            = node
	NodePort        = nodePort
	OpenstackScript = openstackScript
)

// CloudsYAML is the local cloud's clouds.yaml; Client is a Neutron client of it.
func CloudsYAML() []byte                 { return cloudsYAML }
func Client() *gophercloud.ServiceClient { return neutron }
