package nat

import (
	"fmt"
	"strings"

	"github.com/google/nftables"
)

// A hand-off table carries an agent's listeners, TCP ones too, while the agent restarts: the
// stopping agent programs it with Open and Apply and leaves it behind; the next one retires
// it once its own listeners are bound, and removes it when the flows it started have ended.

// Exists reports whether the table name is in the kernel.
func Exists(name string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	for _, t := range ts {
		if t.Name == name {
			return true, nil
		}
	}
	return false, nil
}

// Retire makes the table name start no more flows, in one transaction: its hooked chains are
// emptied, and stay. Flows it started keep their members, as conntrack holds them, but only
// while the table stays: deleting it would take their translations with it. Remove it when
// FlowsOf says they have ended.
func Retire(name string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return err
	}
	for _, ch := range chains {
		if ch.Table.Name == name && ch.Hooknum != nil {
			c.FlushChain(&nftables.Chain{Name: ch.Name, Table: t})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("retiring nftables table %s: %w", name, err)
	}
	return nil
}

// FlowsOf counts the open conntrack flows started by the table whose tag is tag.
func FlowsOf(tag uint8) (int, error) {
	t := &Table{tag: uint32(tag) << 24}
	n, err := t.openFlows(true)
	total := 0
	for _, k := range n {
		total += k
	}
	return total, err
}

// RemoveAll deletes every table of the inet and arp families whose name begins with prefix,
// in one transaction. The flows they started lose their translations.
func RemoveAll(prefix string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	ts, err := c.ListTables()
	if err != nil {
		return err
	}
	for _, t := range ts {
		if strings.HasPrefix(t.Name, prefix) && (t.Family == nftables.TableFamilyINet || t.Family == nftables.TableFamilyARP) {
			c.DelTable(t)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("removing the nftables tables %s*: %w", prefix, err)
	}
	return nil
}

// Remove deletes the table name if it is there. The flows it started are left to conntrack.
func Remove(name string) error {
	ok, err := Exists(name)
	if err != nil || !ok {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("removing nftables table %s: %w", name, err)
	}
	return nil
}
