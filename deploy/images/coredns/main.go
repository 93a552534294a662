// CoreDNS for the test node's cluster DNS, with only the plugins the node's
// Corefile uses (deploy/images/coredns/Corefile): the full build pulls in
// every cloud provider's SDK. Built static (CGO_ENABLED=0) into an image with
// nothing else in it by scripts/build-images.sh.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// The directives this build knows, in CoreDNS's own order of execution.
var directives = []string{
	"reload", "health", "ready", "prometheus", "errors", "log",
	"loadbalance", "cache", "loop", "kubernetes", "forward",
}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
