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
	got, err := conntrackDrops(strings.NewReader(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(2 + 0x10 + 1 + 0x100); got != want {
		t.Fatalf("drops %d, want %d (insert_failed, drop and early_drop of both CPUs)", got, want)
	}
	if _, err := conntrackDrops(strings.NewReader("entries found\n1 2\n")); err == nil {
		t.Fatal("a header without a drop column was read")
	}
}
