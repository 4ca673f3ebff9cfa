package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	cri "k8s.io/cri-client/pkg"
)

// runCRIClean stops and removes every pod sandbox (and so every container) of the CRI runtime at
// -endpoint. Stopping a sandbox through CRI is what runs the CNI DEL of its network: the bridge
// plugin then removes the sandbox's NAT rules and releases its IP, which killing processes
// would leave behind. It prints how many sandboxes it removed and exits non-zero on any error.
func runCRIClean(args []string) int {
	flags := flag.NewFlagSet("cri-clean", flag.ContinueOnError)
	endpoint := flags.String("endpoint", "", "CRI endpoint, e.g. unix:///run/containerd.sock")
	timeout := flags.Duration("timeout", 60*time.Second, "deadline for the whole clean-up")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "cri-clean: -endpoint is required")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	runtime, err := cri.NewRemoteRuntimeService(*endpoint, 10*time.Second, nil, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cri-clean: connect %s: %v\n", *endpoint, err)
		return 1
	}
	sandboxes, err := runtime.ListPodSandbox(ctx, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cri-clean: list sandboxes: %v\n", err)
		return 1
	}
	failed := 0
	for _, sandbox := range sandboxes {
		if err := runtime.StopPodSandbox(ctx, sandbox.Id); err != nil {
			fmt.Fprintf(os.Stderr, "cri-clean: stop %s: %v\n", sandbox.Id, err)
			failed++
			continue
		}
		if err := runtime.RemovePodSandbox(ctx, sandbox.Id); err != nil {
			fmt.Fprintf(os.Stderr, "cri-clean: remove %s: %v\n", sandbox.Id, err)
			failed++
		}
	}
	fmt.Printf("removed %d pod sandboxes\n", len(sandboxes)-failed)
	if failed > 0 {
		return 1
	}
	return 0
}
