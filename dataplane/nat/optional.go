package nat

import "log/slog"

// Optional opens the nftables table that carries listeners in the kernel, or returns nil (the
// proxy carries them) when it is not wanted or cannot be programmed here.
func Optional(wanted bool, open func() (*Table, error), log *slog.Logger) *Table {
	if !wanted {
		return nil
	}
	t, err := open()
	if err != nil {
		log.Warn("every listener goes through the proxy: cannot program nftables", "err", err)
		return nil
	}
	return t
}

// CloseLogged removes the table, if any, and logs what failed; keepFlows leaves its flows
// (Leave) rather than ending them (Close).
func CloseLogged(t *Table, keepFlows bool, log *slog.Logger) {
	if t == nil {
		return
	}
	closeTable := t.Close
	if keepFlows {
		closeTable = t.Leave
	}
	if err := closeTable(); err != nil {
		log.Warn("removing the kernel's listeners", "err", err)
	}
}
