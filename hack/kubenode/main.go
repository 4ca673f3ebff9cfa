// Command kubenode is a multi-call binary holding the parts of a Kubernetes node that the local
// cluster needs next to its control plane: the kubelet, kube-scheduler, and `cri-clean`, which
// stops and removes every pod sandbox of a CRI runtime so that a node can be torn down cleanly.
//
// It is a separate module from the control-plane binary (hack/kubebin) so that the control plane
// does not rebuild when the node changes, and the node is only built where it can run. Each
// component runs as its own process (`kubenode <component> [flags]`), because the upstream
// components keep process-global state (feature gates, klog flags, metrics registries).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client metrics, as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream mains
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kubenode {kubelet|kube-scheduler|cri-clean} [flags]")
	os.Exit(2)
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "kubenode" {
		if len(args) == 0 {
			usage()
		}
		name, args = args[0], args[1:]
	}
	switch name {
	case "kubelet":
		cmd := kubelet.NewKubeletCommand(context.Background())
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "cri-clean":
		os.Exit(runCRIClean(args))
	default:
		usage()
	}
}
