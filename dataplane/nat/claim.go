package nat

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// OpenClaimed opens a table for one of several processes sharing a network namespace (l4lb
// instances in standalone mode): each claims the first tag from first up that no live process
// holds, by a lock file in dir the kernel releases when its holder dies, and the table named
// prefix-<tag>. Without the claim a second instance would take the first one's table over and
// end its flows. A table left by an instance that died is replaced, as Open does.
func OpenClaimed(dir, prefix string, first uint8) (*Table, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for tag := int(first); tag <= 0xff; tag++ {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s-%02x.lock", prefix, tag)), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				continue // another instance's
			}
			return nil, err
		}
		t, err := Open(fmt.Sprintf("%s-%02x", prefix, tag), uint8(tag))
		if err != nil {
			f.Close()
			return nil, err
		}
		t.claim = f
		return t, nil
	}
	return nil, fmt.Errorf("every tag from %#x up is held by another process (locks in %s)", first, dir)
}
