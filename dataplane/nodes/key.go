package nodes

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
)

// ReadKey reads the gossip key from file: raw bytes of a valid AES length, or their base64.
// No file name, or no such file: no key (gossip in the clear).
func ReadKey(file string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	valid := func(n int) bool { return n == 16 || n == 24 || n == 32 }
	if d, err := base64.StdEncoding.DecodeString(string(b)); err == nil && valid(len(d)) {
		return d, nil
	}
	if valid(len(b)) {
		return b, nil
	}
	return nil, fmt.Errorf("gossip key %s: want 16, 24 or 32 bytes (or their base64), got %d", file, len(b))
}

// PrimaryAddress is the first IPv4 address of the default route's interface.
func PrimaryAddress() (string, error) {
	_, iface, err := DefaultGateway()
	if err != nil {
		return "", err
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return "", err
	}
	addrs, _ := ifi.Addrs()
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String(), nil
		}
	}
	return "", fmt.Errorf("no IPv4 address on %s", iface)
}
