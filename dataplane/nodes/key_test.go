package nodes

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadKey(t *testing.T) {
	dir := t.TempDir()
	file := func(content string) string {
		p := filepath.Join(dir, strings.ReplaceAll(content, "/", "_")+".key")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw16 := strings.Repeat("k", 16)
	b64 := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("s", 32)))
	for _, tc := range []struct {
		name, file string
		want       int // key length; -1: an error
	}{
		{"no file given", "", 0},
		{"no such file", filepath.Join(dir, "missing"), 0},
		{"16 raw bytes", file(raw16), 16},
		{"32 bytes in base64, with a newline", file(b64 + "\n"), 32},
		{"a length AES has not", file("short"), -1},
	} {
		key, err := ReadKey(tc.file)
		switch {
		case tc.want < 0 && err == nil:
			t.Errorf("%s: no error, key of %d bytes", tc.name, len(key))
		case tc.want >= 0 && (err != nil || len(key) != tc.want):
			t.Errorf("%s: %d bytes, %v; want %d", tc.name, len(key), err, tc.want)
		}
	}
}
