// Command l4lb is every part of l4lb in one binary:
//
//	l4lb controller   the controller manager (a Deployment, leader-elected)
//	l4lb dataplane    the dataplane agent (a DaemonSet on the host network)
//	l4lb dataplane --config FILE
//	                  the dataplane alone, serving the objects in FILE (like haproxy -f)
//	l4lb octavia-api  Octavia's v2 REST API over the objects, with Keystone's tokens
//
// Each command's flags and wiring live in the package it starts.
package main

import (
	"flag"
	"fmt"
	"os"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/l4lb/l4lb/controllers"
	"github.com/l4lb/l4lb/dataplane/agent"
	"github.com/l4lb/l4lb/internal/octavia"
)

var commands = map[string]func() func() error{
	"controller":  controllers.Command,
	"dataplane":   agent.Command,
	"octavia-api": octavia.Command,
}

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: l4lb controller|dataplane|octavia-api [flags]   (l4lb COMMAND -h lists the flags)")
		os.Exit(2)
	}
	name := os.Args[1]
	os.Args = append([]string{os.Args[0] + " " + name}, os.Args[2:]...)
	// Milliseconds: a failover and the messages that led to it fit in one second.
	opts := zap.Options{TimeEncoder: zapcore.TimeEncoderOfLayout("2006-01-02T15:04:05.000Z07:00")}
	opts.BindFlags(flag.CommandLine)
	run := commands[name]()
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "l4lb "+name+":", err)
		os.Exit(1)
	}
}
