package nat

import "log/slog"

// Optional opens the nftables table that carries UDP listeners, or returns nil (the proxy
// carries them) when it is not wanted or cannot be programmed here.
func Optional(wanted bool, open func() (*Table, error), log *slog.Logger) *Table {
	if !wanted {
		return nil
	}
	t, err := open()
	if err != nil {
		log.Warn("UDP listeners go through the proxy: cannot program nftables", "err", err)
		return nil
	}
	return t
}

// CloseLogged removes the table, if any, and logs what failed.
func CloseLogged(t *Table, log *slog.Logger) {
	if t == nil {
		return
	}
	if err := t.Close(); err != nil {
		log.Warn("removing the kernel's UDP listeners", "err", err)
	}
}
