package health

// Counter turns check results into up/down with Octavia's rise (maxRetries) and fall
// (maxRetriesDown): a state changes only after that many consecutive contrary results.
type Counter struct {
	Up     bool
	streak int // consecutive results contrary to Up
}

// Observe records one result and reports whether the state changed.
func (c *Counter) Observe(ok bool, rise, fall int) bool {
	if ok == c.Up {
		c.streak = 0
		return false
	}
	c.streak++
	need := fall
	if ok {
		need = rise
	}
	if c.streak < need {
		return false
	}
	c.Up, c.streak = ok, 0
	return true
}
