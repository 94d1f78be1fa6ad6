package nat

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
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
	sums, err := sumColumns(f, "drop", "early_drop", "insert_failed")
	c.Drops = sums["drop"] + sums["early_drop"] + sums["insert_failed"]
	return c, err
}

// SynCookies are what the node's SYN proxy did (synproxy.go), since the first rule with one
// in its network namespace: SYNs it answered with a cookie, and ACKs whose cookie it took (a
// connection set up) or refused.
type SynCookies struct {
	Sent, Valid, Invalid uint64
}

// ReadSynCookies reads the calling thread's network namespace's synproxy statistics; all zero
// before its first synproxy rule.
func ReadSynCookies() (SynCookies, error) {
	f, err := os.Open("/proc/thread-self/net/stat/synproxy")
	if os.IsNotExist(err) {
		return SynCookies{}, nil
	}
	if err != nil {
		return SynCookies{}, err
	}
	defer f.Close()
	sums, err := sumColumns(f, "syn_received", "cookie_valid", "cookie_invalid")
	return SynCookies{Sent: sums["syn_received"], Valid: sums["cookie_valid"], Invalid: sums["cookie_invalid"]}, err
}

// sumColumns sums the named columns of a /proc/net/stat file: a header of column names, then
// a line of hexadecimal numbers per CPU. Columns are found by name, as kernels add and remove
// them; at least one must be there.
func sumColumns(r io.Reader, names ...string) (map[string]uint64, error) {
	s := bufio.NewScanner(r)
	if !s.Scan() {
		return nil, fmt.Errorf("kernel statistics: no header")
	}
	cols := map[int]string{}
	for i, name := range strings.Fields(s.Text()) {
		if slices.Contains(names, name) {
			cols[i] = name
		}
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("kernel statistics: none of %v in %q", names, s.Text())
	}
	sums := map[string]uint64{}
	for s.Scan() {
		f := strings.Fields(s.Text())
		for i, name := range cols {
			if i >= len(f) {
				return nil, fmt.Errorf("kernel statistics: short line %q", s.Text())
			}
			n, err := strconv.ParseUint(f[i], 16, 64)
			if err != nil {
				return nil, fmt.Errorf("kernel statistics: %w", err)
			}
			sums[name] += n
		}
	}
	return sums, s.Err()
}
