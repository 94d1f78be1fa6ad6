// Command l4lb is both halves of l4lb:
//
//	l4lb controller   the controller manager (a Deployment, leader-elected)
//	l4lb dataplane    the dataplane agent (a DaemonSet on the host network)
//	l4lb dataplane --config FILE
//	                  the dataplane alone, serving the objects in FILE (like haproxy -f)
//	l4lb octavia-api  Octavia's v2 REST API over the objects, with Keystone's tokens
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	mode := os.Args[1]
	os.Args = append([]string{os.Args[0] + " " + mode}, os.Args[2:]...)
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	var run func() error
	switch mode {
	case "controller":
		run = controllerCommand()
	case "dataplane":
		run = dataplaneCommand()
	case "octavia-api":
		run = octaviaCommand()
	default:
		usage()
	}
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "l4lb "+mode+":", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: l4lb controller|dataplane|octavia-api [flags]   (l4lb MODE -h lists the flags)")
	os.Exit(2)
}
