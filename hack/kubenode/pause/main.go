// Command pause is the pod sandbox ("infra") process of the local node: it holds the pod's
// namespaces, sleeps until SIGTERM or SIGINT, and as PID 1 of the pod reaps any child that is
// re-parented to it so no zombie outlives its container. It uses the standard library only, so
// it builds as a small static binary packed into an image without a registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
