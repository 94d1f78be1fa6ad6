package nat

import "testing"

// RefuseForTest makes the kernel refuse the listeners f picks, until the test ends.
func RefuseForTest(t testing.TB, f func(Listener) bool) {
	refuse = f
	t.Cleanup(func() { refuse = nil })
}
