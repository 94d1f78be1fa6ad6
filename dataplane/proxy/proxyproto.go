package proxy

import (
	"net"
	"net/netip"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/l4lb/l4lb/internal/model"
)

// proxyHeader is the PROXY protocol header a PROXY (v1) or PROXYV2 pool sends before the
// client's bytes, so members learn the client's address; nil for plain TCP pools.
func proxyHeader(p model.PoolProtocol, src, dst netip.AddrPort) []byte {
	var version byte
	switch p {
	case model.PoolPROXY:
		version = 1
	case model.PoolPROXYV2:
		version = 2
	default:
		return nil
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if src.Addr().Is4() != dst.Addr().Is4() {
		// A v4 client on a v6 VIP (or the reverse): express both as v6, as the spec requires
		// one family per header.
		src = netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
	b, err := h.Format()
	if err != nil {
		return nil
	}
	return b
}
