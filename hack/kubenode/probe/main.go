// Command probe is a tiny test workload for the local node: it prints a line, reads its pod's
// service-account token and calls the API server's /version through the in-cluster address
// (KUBERNETES_SERVICE_HOST/PORT, set by the kubelet from the `kubernetes` Service), then prints
// what it learnt and exits. Optional arguments change what it does:
//
//	probe                    print, call /version, exit 0 (non-zero when the call fails)
//	probe alloc <MiB>        allocate and touch that much memory (a memory limit must OOMKill it)
//	probe write <path>       try to write a file (a read-only root fs must refuse it)
//	probe get <url>          GET a plain-HTTP URL and print the status and body (host services)
//
// Standard library only: it builds as a small static binary packed into an image without a
// registry.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

const secrets = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	fmt.Printf("gastown probe: hello from uid %d\n", os.Getuid())
	if len(os.Args) > 1 {
		os.Exit(runCommand(os.Args[1:]))
	}
	os.Exit(callVersion())
}

func runCommand(args []string) int {
	switch {
	case args[0] == "alloc" && len(args) == 2:
		mib, err := strconv.Atoi(args[1])
		if err != nil {
			fmt.Println("probe: alloc needs a number of MiB")
			return 2
		}
		chunks := make([][]byte, 0, mib)
		for i := 0; i < mib; i++ {
			chunk := make([]byte, 1<<20)
			for j := range chunk {
				chunk[j] = 1 // touch every page so it is really charged to the cgroup
			}
			chunks = append(chunks, chunk)
		}
		fmt.Printf("probe: allocated %d MiB\n", len(chunks))
		return 0
	case args[0] == "write" && len(args) == 2:
		if err := os.WriteFile(args[1], []byte("x"), 0o644); err != nil {
			fmt.Printf("probe: write refused: %v\n", err)
			return 0
		}
		fmt.Printf("probe: write allowed: %s\n", args[1])
		return 0
	case args[0] == "get" && len(args) == 2:
		client := &http.Client{Timeout: 10 * time.Second}
		resp, err := client.Get(args[1])
		if err != nil {
			fmt.Printf("probe: GET %s: %v\n", args[1], err)
			return 1
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		fmt.Printf("probe: GET %s -> %d %s\n", args[1], resp.StatusCode, strings.TrimSpace(string(body)))
		return 0
	}
	fmt.Printf("probe: unknown command %q\n", strings.Join(args, " "))
	return 2
}

func callVersion() int {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		fmt.Println("probe: no in-cluster address (KUBERNETES_SERVICE_HOST/PORT unset)")
		return 1
	}
	token, err := os.ReadFile(secrets + "/token")
	if err != nil {
		fmt.Printf("probe: no service-account token: %v\n", err)
		return 1
	}
	caPEM, err := os.ReadFile(secrets + "/ca.crt")
	if err != nil {
		fmt.Printf("probe: no cluster CA: %v\n", err)
		return 1
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		fmt.Println("probe: cluster CA unreadable")
		return 1
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	url := "https://" + net.JoinHostPort(host, port) + "/version"
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fmt.Printf("probe: %v\n", err)
		return 1
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := client.Do(req)
	if err != nil {
		fmt.Printf("probe: GET %s: %v\n", url, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Printf("probe: GET %s -> %d %s\n", url, resp.StatusCode, strings.Join(strings.Fields(string(body)), " "))
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}
