// Command image packs a statically built binary into an OCI image archive in the Dockerfile's
// layout (the binary at /l4lb, the entrypoint, the non-root user, CA certificates and a
// passwd file as distroless/static has them), without Docker and without pulling a base
// image: `ctr images import` loads it on a node, `crane push` or `skopeo copy` push it to a
// registry. It also packs the tiny pod sandbox (pause) image the local cluster needs.
//
//	go run ./hack/image -binary bin/l4lb -tag l4lb:dev -o bin/l4lb-image.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Image is what the Dockerfile's final stage says; image_test.go checks they agree.
var (
	Path       = "/l4lb"
	Entrypoint = []string{"/l4lb"}
	User       = "65532:65532"
)

func main() {
	binary := flag.String("binary", "bin/l4lb", "the static binary to pack")
	tag := flag.String("tag", "l4lb:dev", "the image's name")
	out := flag.String("o", "bin/l4lb-image.tar", "the archive to write")
	path := flag.String("path", Path, "where the binary goes in the image")
	user := flag.String("user", User, "the user the image runs as")
	flag.Parse()
	if err := build(*binary, *tag, *out, *path, *user, []string{*path}); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(binary, tag, out, path, user string, entrypoint []string) error {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	layer, err := rootfs(path, bin)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config = v1.Config{Entrypoint: entrypoint, User: user, Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// rootfs is the one layer: the binary, and what distroless/static gives a Go program (CA
// certificates for the cloud's TLS, a passwd naming the non-root user, a writable /tmp).
func rootfs(path string, bin []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	certs, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	steps := []func() error{
		func() error { return dir("etc/", 0o755) },
		func() error { return dir("etc/ssl/", 0o755) },
		func() error { return dir("etc/ssl/certs/", 0o755) },
		func() error { return dir("tmp/", 0o1777) },
		func() error {
			return file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
		},
		func() error { return file("etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n")) },
		func() error { return file("etc/ssl/certs/ca-certificates.crt", 0o644, certs) },
		func() error { return file(path[1:], 0o755, bin) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}
