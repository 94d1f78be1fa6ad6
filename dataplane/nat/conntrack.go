package nat

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Conntrack is the use of the connection-tracking table the kernel path lives in (the node's
// network namespace, shared with every other user of conntrack there): when it is full, new
// flows of every listener, and the node's own, are dropped, so it is what to watch and size.
type Conntrack struct {
	Entries, Max uint64
	// Drops are packets conntrack dropped: a full table (drop, early_drop) or an entry that
	// could not be inserted (insert_failed), summed over the CPUs since boot.
	Drops uint64
}

// ReadConntrack reads the table's use from /proc (this network namespace's).
func ReadConntrack() (Conntrack, error) {
	var c Conntrack
	for path, v := range map[string]*uint64{
		"/proc/sys/net/netfilter/nf_conntrack_count": &c.Entries,
		"/proc/sys/net/netfilter/nf_conntrack_max":   &c.Max,
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, err
		}
		if *v, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return c, fmt.Errorf("%s: %w", path, err)
		}
	}
	f, err := os.Open("/proc/net/stat/nf_conntrack")
	if err != nil {
		return c, err
	}
	defer f.Close()
	c.Drops, err = conntrackDrops(f)
	return c, err
}

// conntrackDrops sums the drop, early_drop and insert_failed columns of
// /proc/net/stat/nf_conntrack: a header of column names, then a line of hexadecimal numbers
// per CPU. Columns are found by name, as kernels add and remove them.
func conntrackDrops(r io.Reader) (uint64, error) {
	s := bufio.NewScanner(r)
	if !s.Scan() {
		return 0, fmt.Errorf("nf_conntrack statistics: no header")
	}
	var cols []int
	for i, name := range strings.Fields(s.Text()) {
		if name == "drop" || name == "early_drop" || name == "insert_failed" {
			cols = append(cols, i)
		}
	}
	if len(cols) == 0 {
		return 0, fmt.Errorf("nf_conntrack statistics: no drop column in %q", s.Text())
	}
	var sum uint64
	for s.Scan() {
		f := strings.Fields(s.Text())
		for _, i := range cols {
			if i >= len(f) {
				return 0, fmt.Errorf("nf_conntrack statistics: short line %q", s.Text())
			}
			n, err := strconv.ParseUint(f[i], 16, 64)
			if err != nil {
				return 0, fmt.Errorf("nf_conntrack statistics: %w", err)
			}
			sum += n
		}
	}
	return sum, s.Err()
}
