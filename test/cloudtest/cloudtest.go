// Package cloudtest brings up the real Keystone and Neutron of hack/openstack.sh for a test
// binary: a cloud someone started by hand stays up; one started here goes when the tests end.
// It needs root (Debian packages, PostgreSQL); without it, Up reports that.
package cloudtest

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// KeystoneURL is where hack/openstack.sh serves Keystone.
const KeystoneURL = "http://127.0.0.1:15000/v3"

// NeutronURL is where hack/openstack.sh serves Neutron.
const NeutronURL = "http://127.0.0.1:19696"

// ErrNotRoot is Up's answer without root.
var ErrNotRoot = errors.New("the local Keystone and Neutron (hack/openstack.sh) need root: run make test as root")

// Up starts the cloud unless it answers already, and returns its clouds.yaml (cloud
// "l4lb-local", the admin) and what stops it (nothing, if it was up before).
func Up() (cloudsYAML []byte, down func(), err error) {
	down = func() {}
	if os.Geteuid() != 0 {
		return nil, down, ErrNotRoot
	}
	started := !answers(KeystoneURL)
	out, err := exec.Command(script(), "up").Output()
	if err != nil {
		return nil, down, fmt.Errorf("hack/openstack.sh up: %v", err)
	}
	if started {
		down = func() { exec.Command(script(), "down").Run() }
	}
	path := strings.TrimSpace(string(out))
	stateDir = filepath.Dir(path)
	cloudsYAML, err = os.ReadFile(path)
	return cloudsYAML, down, err
}

// script is hack/openstack.sh, in the nearest folder above the working directory (a test's is
// its package's) that has it: found from there because make builds with -trimpath, which
// leaves no folder in runtime.Caller's answers.
func script() string {
	dir, _ := os.Getwd()
	for {
		path := filepath.Join(dir, "hack", "openstack.sh")
		if _, err := os.Stat(path); err == nil || filepath.Dir(dir) == dir {
			return path
		}
		dir = filepath.Dir(dir)
	}
}

// Script runs hack/openstack.sh with cmd (stop-neutron, start-neutron, ...), for the tests
// that make the cloud fail.
func Script(cmd string) ([]byte, error) { return exec.Command(script(), cmd).CombinedOutput() }

// stateDir is hack/openstack.sh's, where its processes' pid files are.
var stateDir string

// PauseKeystone stops Keystone's process (SIGSTOP), as a hung server or a stalled host looks
// to its clients: connections are accepted, nothing is answered. resume continues it.
func PauseKeystone() (resume func(), err error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "keystone.pid"))
	if err != nil {
		return nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { syscall.Kill(pid, syscall.SIGCONT) }) }, nil
}

// answers reports whether an HTTP server answers at url.
func answers(url string) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}
