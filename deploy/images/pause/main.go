// The sandbox ("pause") container of the test node: it holds a pod's
// namespaces, reaps the zombies a shared process namespace hands it, and
// exits when the kubelet stops the sandbox. Built static (CGO_ENABLED=0) into
// an image with nothing else in it by scripts/build-images.sh.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for received := range signals {
		if received != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
