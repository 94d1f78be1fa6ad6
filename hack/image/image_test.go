package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// dockerfile reads the final stage of the Dockerfile: where the binary goes, the user and the
// entrypoint.
func dockerfile(t *testing.T) (path, user string, entrypoint []string) {
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "FROM": // a new stage: only the last one's say counts
			path, user, entrypoint = "", "", nil
		case "COPY":
			if len(fields) == 4 && strings.HasPrefix(fields[1], "--from=") {
				path = fields[3]
			}
		case "USER":
			user = fields[1]
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(strings.TrimPrefix(s.Text(), "ENTRYPOINT")), &entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT %q: %v", s.Text(), err)
			}
		}
	}
	return path, user, entrypoint
}

// TestImageAgreesWithDockerfile builds an image as make image does and reads it back: the
// binary where the Dockerfile copies it, the same entrypoint and user, the files
// distroless/static gives a Go program.
func TestImageAgreesWithDockerfile(t *testing.T) {
	path, user, entrypoint := dockerfile(t)
	if path != Path || user != User || !slices.Equal(entrypoint, Entrypoint) {
		t.Fatalf("the Dockerfile says %s, user %s, entrypoint %v; make image says %s, %s, %v", path, user, entrypoint, Path, User, Entrypoint)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "l4lb")
	// The flags of make image (and of the e2e tests' image), which also share the compiled
	// packages with them: another set of flags compiles every dependency once more.
	gobuild := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "../..")
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out := filepath.Join(dir, "image.tar")
	if err := build(bin, "l4lb:test", out, Path, User, Entrypoint); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != user || !slices.Equal(cfg.Config.Entrypoint, entrypoint) || cfg.OS != "linux" {
		t.Fatalf("image config: user %q, entrypoint %v, os %q", cfg.Config.User, cfg.Config.Entrypoint, cfg.OS)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want := map[string]int64{strings.TrimPrefix(path, "/"): 0o755, "etc/passwd": 0o644, "etc/ssl/certs/ca-certificates.crt": 0o644, "tmp/": 0o1777}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if mode, ok := want[h.Name]; ok && h.Mode == mode {
			delete(want, h.Name)
		}
	}
	if len(want) > 0 {
		t.Fatalf("missing from the image (or with another mode): %v", want)
	}
}
