package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/l4lb/l4lb/dataplane/agent"
	"github.com/l4lb/l4lb/dataplane/nat"
)

// flowWatch runs what a VIP's holder runs to tell its successor of the kernel path's flows
// (agent.FlowSync: conntrack's events of the node read and filtered by the table's mark, each
// flow of ours encoded and queued, datagrams made every 50 ms, a dump every 10 s), with the
// datagrams counted instead of sent. The table it opens carries nothing: tag is that of the
// l4lb whose flows it watches.
func flowWatch(vip string, tag uint8) {
	t, err := nat.Open("l4lb-bench-flowwatch", tag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flowwatch:", err)
		os.Exit(1)
	}
	defer t.Leave() // not Close: that would end the watched l4lb's flows, which share the tag
	var msgs, bytes atomic.Int64
	s := &agent.FlowSync{Table: t, Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Successors: func() map[string]string { return map[string]string{vip: "successor"} },
		Send: func(_ string, msg []byte) error {
			msgs.Add(1)
			bytes.Add(int64(len(msg)))
			return nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Start(ctx); close(done) }()
	io.Copy(io.Discard, os.Stdin)
	cancel()
	<-done
	fmt.Printf("%d datagrams, %d bytes\n", msgs.Load(), bytes.Load())
}

func parseTag(s string) uint8 {
	v, err := strconv.ParseUint(s, 0, 8)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flowwatch: tag:", err)
		os.Exit(2)
	}
	return uint8(v)
}
