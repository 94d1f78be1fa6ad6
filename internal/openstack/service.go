package openstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ServiceCredentials reads the service's own credentials, from a Secret (again on each
// authentication, so a rotated Secret is picked up) or a file.
func ServiceCredentials(c client.Client, secret, file, cloud string) (func(context.Context) (Credentials, error), error) {
	switch {
	case file != "":
		return func(context.Context) (Credentials, error) {
			b, err := os.ReadFile(file)
			if err != nil {
				return Credentials{}, err
			}
			return FromSecret(map[string][]byte{"clouds.yaml": b}, cloud)
		}, nil
	case secret != "":
		ns, name, ok := strings.Cut(secret, "/")
		if !ok {
			return nil, fmt.Errorf("--openstack-secret: want NAMESPACE/NAME, got %q", secret)
		}
		return func(ctx context.Context) (Credentials, error) {
			var s corev1.Secret
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
				return Credentials{}, fmt.Errorf("secret %s: %w", secret, err)
			}
			return FromSecret(s.Data, cloud)
		}, nil
	}
	return nil, errors.New("the Octavia API validates tokens with Keystone: give --openstack-secret or --clouds-yaml")
}
