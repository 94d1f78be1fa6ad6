package nat

import "testing"

// RefuseForTest makes the kernel refuse the listeners f picks, until the test ends.
func RefuseForTest(t testing.TB, f func(Listener) bool) {
	refuse = f
	t.Cleanup(func() { refuse = nil })
}

// RefuseSynproxyForTest makes tables opened until the test ends find no SYN proxy in the
// kernel, as one without nft_synproxy.
func RefuseSynproxyForTest(t testing.TB) {
	refuseSynproxy = true
	t.Cleanup(func() { refuseSynproxy = false })
}
