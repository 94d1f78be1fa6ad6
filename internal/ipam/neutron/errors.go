package neutron

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/gophercloud/gophercloud/v2"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
)

// The one place gophercloud errors are classified.

func isNotFound(err error) bool { return gophercloud.ResponseCodeIs(err, http.StatusNotFound) }

// classify wraps err with the step that failed and the condition reason users see: the cloud
// unreachable or failing (retried with backoff), credentials refused, a conflict, a quota.
func classify(step string, err error) error {
	if err == nil {
		return nil
	}
	reason := lbv1.ReasonProviderUnavailable
	var code gophercloud.ErrUnexpectedResponseCode
	var netErr net.Error
	switch {
	case errors.As(err, &code) && (code.Actual == http.StatusUnauthorized || code.Actual == http.StatusForbidden):
		reason = lbv1.ReasonCredentialsRefused
	case errors.As(err, &code) && code.Actual == http.StatusConflict && strings.Contains(strings.ToLower(string(code.Body)), "quota"):
		reason = lbv1.ReasonQuotaExceeded
	case errors.As(err, &code) && code.Actual == http.StatusConflict:
		reason = lbv1.ReasonConflict
	case errors.As(err, &code) && code.Actual == http.StatusNotFound:
		reason = lbv1.ReasonNotFound
	case errors.As(err, &code) && code.Actual >= 500, errors.As(err, &netErr), errors.Is(err, context.DeadlineExceeded):
		reason = lbv1.ReasonProviderUnavailable
	}
	return &ipam.Error{Reason: reason, Err: fmt.Errorf("%s: %w", step, err)}
}
