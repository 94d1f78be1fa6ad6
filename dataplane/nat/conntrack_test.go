package nat

import (
	"strings"
	"testing"
)

func TestConntrackDropsSumsTheDropColumnsOfEveryCPU(t *testing.T) {
	stat := `entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000070  00000000 0001f103 00000000 000000e2 00000000 00000000 00000000 00000000 00000002 00000010 00000001 00000000  00000000 00000000 00000000 00000000
00000070  00000000 0001f78c 00000000 00000258 00000000 00000000 00000000 00000000 00000000 00000100 00000000 00000000  00000000 00000000 00000000 00000000
`
	got, err := sumColumns(strings.NewReader(stat), "drop", "early_drop", "insert_failed")
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(2 + 0x10 + 1 + 0x100); got["drop"]+got["early_drop"]+got["insert_failed"] != want {
		t.Fatalf("drops %v, want %d in all (insert_failed, drop and early_drop of both CPUs)", got, want)
	}
	if _, err := sumColumns(strings.NewReader("entries found\n1 2\n"), "drop"); err == nil {
		t.Fatal("a header without a drop column was read")
	}
}
